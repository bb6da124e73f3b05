"""A stand-in OpenTelemetry collector for the benchmark: it takes OTLP/HTTP
exports (``POST /v1/traces``), counts them and their bytes, and answers as a
collector does (200, an empty ``ExportTraceServiceResponse``). The system's
cost of tracing is then its own: building spans, encoding, sending."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Sink:
    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.lock = threading.Lock()


@contextmanager
def running() -> Iterator[tuple[str, Sink]]:
    """A sink on a free loopback port: its OTLP endpoint URL, and its counts."""
    sink = Sink()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            size = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(size)
            with sink.lock:
                sink.requests += 1
                sink.bytes += size
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", sink
    finally:
        server.shutdown()
        server.server_close()
