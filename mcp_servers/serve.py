"""Running a server: stdio by default, streamable HTTP on request (loopback
by default, behind a bearer token when MCP_TOKEN is set). Logs go to stderr
(the SDK sets that up when the server is created): on stdio, stdout carries
the protocol and nothing else."""

from __future__ import annotations

import argparse
import hmac
import sys
from collections.abc import Callable
from typing import Any

import uvicorn
from mcp.server.mcpserver import MCPServer

from mcp_servers.api import ShopApi
from mcp_servers.settings import LogLevel, McpSettings
from streams.settings import is_loopback


def main(name: str, default_port: int,
         create_server: Callable[[ShopApi, LogLevel], MCPServer],
         argv: list[str] | None) -> int:
    """A server's command line: read the options and settings, build it, run it."""
    args = arguments(name, default_port, argv)
    settings = settings_from(args)
    token = settings.shop_api_token.get_secret_value() if settings.shop_api_token else None
    return serve(create_server(ShopApi(settings.shop_api_url, token), settings.log_level),
                 settings, args)


def arguments(name: str, default_port: int, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=f"{name}-mcp",
        description=f"The {name} MCP server of the Redis Streams shop: stdio by default.",
    )
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP on /mcp")
    parser.add_argument("--host", help="address to bind with --http (MCP_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int,
                        help=f"port with --http (MCP_PORT, {default_port})")
    parser.add_argument("--api-url", help="the order API (SHOP_API_URL, http://127.0.0.1:8000)")
    args = parser.parse_args(argv)
    args.default_port = default_port
    return args


def settings_from(args: argparse.Namespace) -> McpSettings:
    given = {"shop_api_url": args.api_url, "mcp_host": args.host, "mcp_port": args.port}
    return McpSettings(**{k: v for k, v in given.items() if v is not None})


def serve(server: MCPServer, settings: McpSettings, args: argparse.Namespace) -> int:
    if not args.http:
        server.run()
        return 0
    if settings.mcp_token is None and not is_loopback(settings.mcp_host):
        sys.stderr.write(
            f"{server.name}-mcp: refusing to serve {settings.mcp_host} without a token: anyone "
            "who reaches it could act with this server's shop token. Set MCP_TOKEN, or bind "
            "127.0.0.1\n")
        return 2
    app: Any = server.streamable_http_app(host=settings.mcp_host)
    if settings.mcp_token is not None:
        app = BearerToken(app, settings.mcp_token.get_secret_value())
    port = settings.mcp_port or args.default_port
    sys.stderr.write(
        f"{server.name} MCP server on http://{settings.mcp_host}:{port}/mcp, "
        + ("bearer token required\n" if settings.mcp_token else "no token (set MCP_TOKEN)\n")
    )
    uvicorn.run(app, host=settings.mcp_host, port=port, log_level=settings.log_level.lower())
    return 0


class BearerToken:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body":
                            b'{"error": "missing or wrong bearer token (see MCP_TOKEN)"}'})
                return
        await self.app(scope, receive, send)
