"""A webhook receiver to try ``webhooks.yaml`` with, and to read as an
example: ``python -m gateway.receiver --port 9099 --secret-file
.data/tokens/webhook-secret``.

It checks each delivery's signature (``gateway.signing.verify``), keeps each
``Idempotency-Key`` it has taken (a message delivered again is answered 200
and not taken twice: what a receiver of at-least-once deliveries does), and
prints one line per delivery. ``--fail N`` answers 503 to the first N, to
watch the gateway retry, suspend the endpoint and resume.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from gateway.signing import verify


def serve(host: str, port: int, secret: str | None, fail: int) -> ThreadingHTTPServer:
    taken: set[str] = set()
    lock = threading.Lock()
    failures = [fail]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802  # the stdlib's name
            key = self.headers.get("Idempotency-Key", "")
            length = int(self.headers.get("Content-Length") or 0)
            if length > 1 << 20:
                self.close_connection = True
                self._answer(413, f"refused {key}: {length} bytes is over 1 MiB")
                return
            body = self.rfile.read(length)
            if len(body) < length:  # cut off (the sender died): not taken, it comes again
                self.close_connection = True
                return
            signature = self.headers.get("X-Shop-Signature", "")
            if secret is not None and not verify(secret, signature, body):
                self._answer(401, f"refused {key}: bad or missing signature")
                return
            with lock:
                if failures[0] > 0:
                    failures[0] -= 1
                    self._answer(503, f"answered 503 to {key} (--fail: {failures[0]} more)")
                    return
                again = key in taken
                taken.add(key)
            try:
                event = json.loads(body)
                what = f"order {event.get('order_id')} {event.get('status', event)}"
            except ValueError:
                what = f"{len(body)} bytes, not JSON"
            self._answer(200, f"{what} (key {key}, attempt {self.headers.get('X-Shop-Attempt')}"
                              f"{', signature ok' if secret else ''})"
                              + (": again, already taken" if again else ""))

        def _answer(self, status: int, line: str) -> None:
            print(line, flush=True)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.receiver", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9099)
    parser.add_argument("--secret-file", type=Path,
                        help="the signing secret (shopctl up keeps it in "
                        ".data/tokens/webhook-secret); without it, signatures are not checked")
    parser.add_argument("--fail", type=int, default=0, metavar="N",
                        help="answer 503 to the first N deliveries")
    args = parser.parse_args(argv)
    secret = args.secret_file.read_text().strip() if args.secret_file else None
    server = serve(args.host, args.port, secret, args.fail)
    print(f"receiving webhooks on http://{args.host}:{args.port}/ "
          f"({'checking signatures' if secret else 'signatures not checked'}); Ctrl-C stops",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
