"""The order status projector: moves each order's status from the events."""
