"""What the benchmark's phases stand on: its options, the processes it starts,
the order bodies it sends, and percentiles."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from shopctl.bench.loadgen import Bodies

PRODUCTS, CUSTOMERS = 5, 50
Say = Callable[[str], None]


@dataclass
class Options:
    orders: int = 20_000
    concurrency: int = 64
    rate: float | None = None
    duration_s: float = 15.0
    api_url: str | None = None  # a running system instead of a throwaway one
    redis_url: str | None = None
    out: Path = Path("bench-results")
    runner_events: int = 20_000
    scarce: bool = False  # stock for half the demand: refunds on purpose
    log_level: str = "WARNING"
    launcher_args: list[str] = field(default_factory=list)
    # Saturation and steady on a system of each partition count (the first is
    # the system of every phase), then the last again with two replicas of
    # each worker: what partitions and the replica scheme cost, in one run.
    partitions: list[int] = field(default_factory=lambda: [1])
    # Run saturation and steady again on a system with --no-auth: what
    # authentication costs, in the same run.
    compare_auth: bool = True
    compare_telemetry: bool = True
    token: str | None = None  # with api_url: an operator token of that system
    # shopctl bench --cluster: saturation and steady on a local cluster beside
    # one server, the same partitions (shopctl.bench.cluster)
    cluster: bool = False
    rounds: int = 2  # how many times the two systems take turns
    # shopctl bench --abuse: hostile clients instead of the phases (shopctl.bench.abuse)
    abuse: bool = False
    abuse_slow: int = 1000
    abuse_uploads: int = 3
    abuse_upload_mb: int = 500
    abuse_flood: int = 20_000
    abuse_header_timeout_s: float = 10.0


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], 2)}


def wait_http(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout_s:.0f}s") from None
            time.sleep(0.1)


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(args, env=os.environ | (env or {}), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def order_bodies(tokens: dict[str, str] | None) -> Bodies:
    """The orders the benchmark sends, as a real client sends them: each
    customer's with that customer's token (``tokens``; None: no header, for a
    system without authentication). The body is the same either way."""
    headers = [
        b"Authorization: Bearer %s\r\n" % tokens[f"bench-c{i}"].encode() if tokens else b""
        for i in range(CUSTOMERS)
    ]

    def order_body(index: int) -> tuple[bytes, bytes]:
        customer = index % CUSTOMERS
        body = b'{"customer_id":"bench-c%d","lines":[{"product_id":"bench-p%d","quantity":1}]}' % (
            customer, index % PRODUCTS)
        return body, headers[customer]

    return order_body
