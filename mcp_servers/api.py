"""The order API over HTTP, as both servers call it, with the server's own
token. Every failure becomes a ``ToolError`` whose message says what to fix:
the API's own ``detail`` for a 4xx, and what to check when the API or its
data store cannot be reached."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx2
from mcp.server.mcpserver.exceptions import ToolError


class ApiError(ToolError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def path(*segments: str) -> str:
    """A path of the API from segments, each one escaped: an argument is only
    ever a segment (``../customers/alice`` stays one, and is refused as an id)."""
    return "/" + "/".join(quote(segment, safe="") for segment in segments)


class ShopApi:
    def __init__(self, base_url: str, token: str | None = None,
                 client: httpx2.AsyncClient | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = client

    @property
    def client(self) -> httpx2.AsyncClient:
        if self._client is None:
            self._client = httpx2.AsyncClient(base_url=self.base_url, timeout=10)
        return self._client

    async def get(self, path: str, **params: Any) -> Any:
        query = {k: v for k, v in params.items() if v is not None}
        return await self._send("GET", path, params=query)

    async def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        return await self._send("POST", path, json=body, headers=headers)

    async def patch(self, path: str, body: Any) -> Any:
        return await self._send("PATCH", path, json=body)

    async def delete(self, path: str) -> None:
        await self._send("DELETE", path)

    async def _send(self, method: str, path: str, headers: dict[str, str] | None = None,
                    **kwargs: Any) -> Any:
        try:
            answer = await self.client.request(method, path, headers=self.headers | (headers or {}),
                                               **kwargs)
        except httpx2.TransportError as exc:
            raise ToolError(
                f"the order API at {self.base_url} is unreachable ({type(exc).__name__}); "
                "check that the shop is running (`make up`) and that SHOP_API_URL points at it"
            ) from None
        if answer.status_code == 503:
            raise ApiError(503, "the shop's data store is unreachable right now; "
                                "try again in a second")
        if answer.status_code == 401:
            raise ApiError(401, "the shop refused this server's token (SHOP_API_TOKEN): "
                                + _detail(answer))
        if answer.status_code >= 400:
            raise ApiError(answer.status_code, _detail(answer))
        return answer.json() if answer.content else None


def _detail(answer: httpx2.Response) -> str:
    try:
        return str(answer.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return answer.text[:300]
