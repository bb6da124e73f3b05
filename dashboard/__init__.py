"""The live dashboard at ``/dashboard``: the flow, orders by status, recent
orders and their timelines, dead letters, the gateways' endpoints; served
by the API, updated by server-sent events, no build step."""
