"""What every request must be before the app looks at it: no larger than the
body limit says; for a host this API answers for (so that a page elsewhere
that points its own name at 127.0.0.1 cannot reach it: DNS rebinding); and
with a JSON body when it has one (a form or ``text/plain`` body, which a
browser sends cross-site without asking, is refused before it is read).

Starlette's ``TrustedHostMiddleware`` does the first but answers in plain
text; every refusal here is the API's JSON ``{"detail": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json"))


def _host_of(header: bytes) -> str:
    host = header.decode("latin-1").strip().lower()
    if host.startswith("["):  # [::1]:8000
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class RequestGuard:
    def __init__(self, app: ASGIApp, trusted_hosts: Iterable[str], max_body_bytes: int) -> None:
        self.app = app
        self.hosts = frozenset(trusted_hosts)
        self.any_host = "*" in self.hosts
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = content_type = None
        length = b""
        chunked = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"content-type":
                content_type = value
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if not self.any_host and (host is None or _host_of(host) not in self.hosts):
            shown = host.decode("latin-1")[:100] if host else "none"
            await _refuse(send, 400, f"Host header {shown!r} is not a host this API answers "
                                     "for (API_TRUSTED_HOSTS)")
            return
        if length.isdigit() and int(length) > self.max_body_bytes:
            # Declared too large: refused before a byte of it is read. A body
            # without a length (chunked) is counted as it streams, by the app's
            # own limit (FastAPI's max_body_size), and refused the same way.
            await _refuse(send, 413, f"the body is over {self.max_body_bytes} bytes "
                                     "(API_MAX_BODY_BYTES); it was not read", close=True)
            return
        has_body = chunked or length not in (b"", b"0")
        if scope["method"] in _BODY_METHODS and has_body and not (
                content_type and _is_json(content_type)):
            shown = content_type.decode("latin-1")[:100] if content_type else "none"
            await _refuse(send, 415, f"the body must be application/json (Content-Type: "
                                     f"{shown})", close=True)
            return
        await self.app(scope, receive, send)


async def _refuse(send: Send, status: int, detail: str, *, close: bool = False) -> None:
    body = json.dumps({"detail": detail}, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    if close:  # the body is left unread: don't read it to reach the next request
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
