"""Two MCP servers that let AI agents run the shop, as thin adapters over the
order API's HTTP interface: ``shop`` (buy and follow orders) and ``ops``
(stock and operations)."""
