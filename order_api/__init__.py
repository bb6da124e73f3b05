"""The order API (FastAPI) and the order status projector."""
