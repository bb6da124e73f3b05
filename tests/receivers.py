"""Real HTTP receivers for the gateway's tests: they answer, fail, time out,
answer slowly or flap, as told, and keep every request they got."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shopctl.redis_server import free_port


@dataclass
class Got:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # monotonic

    def json(self) -> Any:
        return json.loads(self.body)


# What a receiver does with a request: (status, seconds to wait first). A
# status of 0 closes the connection without an answer.
Behaviour = Callable[[int], tuple[int, float]]


def answer(status: int = 200, delay_s: float = 0.0) -> Behaviour:
    return lambda _n: (status, delay_s)


def flapping(period: int, status: int = 503) -> Behaviour:
    """``period`` requests answered, then ``period`` failed, and so on."""
    return lambda n: (200, 0.0) if (n // period) % 2 == 0 else (status, 0.0)


@dataclass
class Receiver:
    """A receiver on 127.0.0.1; ``behave`` decides each answer (it may be
    changed at any time); ``got`` keeps what was answered 2xx, ``seen``
    everything."""

    behave: Behaviour = field(default_factory=answer)
    port: int = field(default_factory=free_port)
    got: list[Got] = field(default_factory=list)
    seen: list[Got] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if len(body) < length:  # the sender died mid-request: nothing arrived
                    self.close_connection = True
                    return
                request = Got(self.command, self.path, dict(self.headers), body,
                              time.monotonic())
                with receiver.lock:
                    n = len(receiver.seen)
                    receiver.seen.append(request)
                status, delay_s = receiver.behave(n)
                if delay_s:
                    time.sleep(delay_s)
                if status == 0:
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if 200 <= status < 300:
                    with receiver.lock:
                        receiver.got.append(request)
                payload = json.dumps({"ok": 200 <= status < 300}).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:
                    pass  # the client gave up waiting

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _any  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def bodies(self) -> list[Any]:
        with self.lock:
            return [g.json() for g in self.got]
