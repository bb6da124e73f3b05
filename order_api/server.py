"""The HTTP server: uvicorn, with the limits a server facing clients needs.

uvicorn caps the size of a request's headers only in its pure-Python h11
protocol, and times out only idle keep-alive connections: a client that
sends its headers or its body a byte at a time holds a connection (and a
file descriptor) for ever. ``GuardedHttpTools`` is uvicorn's fast httptools
protocol plus:

- request line and headers over ``max_header_bytes``: 431, connection closed;
- headers not complete within ``header_timeout_s`` of the request's first
  byte (or of the connection, for its first request): 408, closed;
- a body not complete within ``body_timeout_s`` of the headers: 408, closed.

Idle keep-alive connections close after uvicorn's ``timeout_keep_alive``.
Each answer is JSON, as the app's are.

A connection closed in the middle of a request (a refusal before the body was
read: 408, 413, 415, 431) lingers before it closes: the answer is sent and the
sending side shut, then nothing more is read (what the client still sends
waits in the kernel's buffers, which stay bounded by the socket's window)
for ``LINGER_S``, and only then is the socket closed. Closed at once, with
data unread, the kernel resets the connection, and a client still sending
often loses the answer that said why; read until the end, a 500 MB upload
costs the API the reading of 500 MB. Limits beyond one process (many
thousands of connections from many addresses) belong in a reverse proxy in
front: see docs/operations.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import get_remote_addr

from order_api.settings import ApiSettings

log = logging.getLogger(__name__)


LINGER_S = 2.0


class _Lingering:
    """The transport as uvicorn sees it: ``close()`` in the middle of a request
    becomes a lingering close (see the module's docstring)."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpTools) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closing = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def is_closing(self) -> bool:
        return self._closing or self._transport.is_closing()

    def close(self) -> None:
        transport = self._transport
        if self._closing or transport.is_closing():
            return
        self._closing = True
        if not self._protocol.in_request or not transport.can_write_eof():
            transport.close()
            return
        self._protocol.draining = True
        transport.pause_reading()
        transport.write_eof()  # after what is buffered: the answer reaches the client
        self._protocol.loop.call_later(LINGER_S, transport.close)


class GuardedHttpTools(HttpToolsProtocol):
    max_header_bytes = 16 * 1024
    header_timeout_s = 10.0
    body_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._refused = False
        self.in_request = False  # from a request's first byte to its last
        self.draining = False  # closed in the middle of one: nothing more is read

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_Lingering(transport, self))  # type: ignore[arg-type]
        self._arm(self.header_timeout_s, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """uvicorn's, but a parse that one of our callbacks stopped has been
        answered already: it is not also a 400."""
        if self._refused or self.draining:
            return  # dropped: the request was answered already
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if not self._refused:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.in_request = True
        self._header_bytes = 0
        if self._timer is None:  # a request on a kept-alive connection
            self._arm(self.header_timeout_s, "headers")

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        if not self.parser.should_upgrade() and self._expects_body():
            self._arm(self.body_timeout_s, "body")

    def on_message_complete(self) -> None:
        self._disarm()
        self.in_request = False
        super().on_message_complete()

    def _expects_body(self) -> bool:
        for name, value in self.headers:
            if name == b"content-length":
                return value.strip() not in (b"", b"0")
            if name == b"transfer-encoding":
                return True
        return False

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > self.max_header_bytes:
            self._refuse(431, f"the request line and headers are over {self.max_header_bytes} "
                              "bytes (API_MAX_HEADER_BYTES)")
            raise ValueError("headers too large")  # stops the parser; see data_received

    def _arm(self, seconds: float, what: str) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._too_slow, what, seconds)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self, what: str, seconds: float) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and self.cycle.response_started:
            self.transport.close()  # the app is answering: cut it off, nothing to add
            return
        setting = "API_HEADER_TIMEOUT_S" if what == "headers" else "API_BODY_TIMEOUT_S"
        self._refuse(408, f"the request's {what} did not arrive within {seconds:g}s ({setting})")

    def _refuse(self, status: int, detail: str) -> None:
        self._disarm()
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        client = get_remote_addr(self.transport)
        log.info("refused %s: %d %s", f"{client[0]}:{client[1]}" if client else "a client",
                 status, detail)
        body = json.dumps({"detail": detail}, separators=(",", ":")).encode()
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, reason, len(body), body))
        if self.cycle is not None:  # the app hears a disconnect; its answer goes nowhere
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.transport.close()


def raise_open_file_limit() -> int:
    """Raise this process's open-file limit to the most the system allows (each
    connection is a file descriptor); return the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def protocol_for(settings: ApiSettings) -> type[GuardedHttpTools]:
    return type("ApiHttpProtocol", (GuardedHttpTools,), {
        "max_header_bytes": settings.api_max_header_bytes,
        "header_timeout_s": settings.api_header_timeout_s,
        "body_timeout_s": settings.api_body_timeout_s,
    })


def run_server(app: Any, settings: ApiSettings) -> None:
    """Serve ``app`` as the API is served (the benchmark's baseline uses it too):
    uvicorn with uvloop, the guarded httptools protocol, no access log."""
    raise_open_file_limit()
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        loop="auto",
        http=protocol_for(settings),
        timeout_keep_alive=settings.api_keepalive_timeout_s,
        # An open dashboard is an endless response: at a stop, requests in flight
        # get this long to finish, then the streams are cut.
        timeout_graceful_shutdown=5,
        log_config=None,  # our handler, our format
        access_log=False,
    )
