"""What the tools of both servers share: arguments checked strictly, and a
bad argument reported in one line a model can act on.

The SDK's argument models ignore arguments they do not know and report a
bad one as pydantic's multi-line dump. ``StrictServer`` refuses unknown
arguments (and says so in each tool's input schema) and names each wrong
argument on one line. It reads the SDK's tool registry
(``_tool_manager``), which has no public accessor for a tool's argument
model.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import Tool
from pydantic import ValidationError


def one_line(exc: ValidationError) -> str:
    """``lines.0.quantity: Input should be ...; customer_id: ...``."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}"
        for err in exc.errors()
    )


class StrictServer(MCPServer):
    async def list_tools(self) -> list[Tool]:
        tools = await super().list_tools()
        for tool in tools:
            tool.input_schema["additionalProperties"] = False
        return tools

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Any = None) -> Any:
        tool = self._tool_manager.get_tool(name)
        if tool is not None:
            known = set(tool.parameters.get("properties", {}))
            if unknown := sorted(set(arguments) - known):
                raise ToolError(f"unknown argument(s) {', '.join(unknown)}: {name} takes "
                                f"{', '.join(sorted(known)) or 'none'}")
            try:
                tool.fn_metadata.validate_arguments(arguments)
            except ValidationError as exc:
                raise ToolError(one_line(exc)) from None
        return await super().call_tool(name, arguments, context)
