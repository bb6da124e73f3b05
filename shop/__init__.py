"""The shop: its events, the topology it hands the bus, its keys and statuses."""
