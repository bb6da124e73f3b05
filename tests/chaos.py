"""What the chaos tests share: customers who place orders as a careful client
does, and waiting until the system is quiet."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Mapping

import httpx2
import redis

from shop import keys
from shop.statuses import FINAL_STATUSES
from shopctl.redis_server import find_cli
from streams.topology import Topology
from tests.running import Running


class Customers:
    """Senders that place orders as a careful client does: one Idempotency-Key
    per order, the same key again on any failure, until it is accepted."""

    def __init__(self, base: str, bodies: list[tuple[str, dict]],
                 tokens: dict[str, dict[str, str]], pace_s: float) -> None:
        self.base = base
        self.tokens = tokens
        self.bodies = bodies  # (Idempotency-Key, body)
        self.pace_s = pace_s
        self.accepted: dict[str, str] = {}  # key -> order id
        self.retries = self.replays = self.unknown = 0
        self.lock = threading.Lock()
        # The last tenth of the orders waits until the planned chaos (the stuck
        # consumer, the Redis kill) has happened: it must happen while orders
        # flow, however fast the system takes them or however long a step takes.
        self.planned_done = threading.Event()

    def send(self, share: list[tuple[str, dict]]) -> None:
        """Place ``share`` in order, no faster than one order every ``pace_s``:
        the chaos needs the orders to be flowing for a while, however fast the
        system takes them."""
        next_at = time.monotonic()
        with httpx2.Client(base_url=self.base, timeout=5) as http:
            for key, body in share:
                if len(self.accepted) >= len(self.bodies) * 9 // 10:
                    assert self.planned_done.wait(120), "the planned chaos never happened"
                time.sleep(max(0.0, next_at - time.monotonic()))
                next_at += self.pace_s
                self.accepted[key] = self._place(http, key, body)

    def _place(self, http: httpx2.Client, key: str, body: dict) -> str:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = http.post(
                    "/orders",
                    json=body,
                    headers={"Idempotency-Key": key, **self.tokens[body["customer_id"]]},
                )
                if answer.status_code == 202:
                    if answer.headers.get("idempotent-replayed"):
                        with self.lock:
                            self.replays += 1
                    return answer.json()["id"]
                # 503: nothing was done; 504: perhaps it was. Either way: the same key again.
                assert answer.status_code in (503, 504), f"{answer.status_code}: {answer.text}"
                if answer.status_code == 504:
                    with self.lock:
                        self.unknown += 1
            except httpx2.TransportError:
                pass  # the API was killed mid-request: did it take the order? Ask again.
            with self.lock:
                self.retries += 1
            assert time.monotonic() < deadline, f"order {key} not accepted within 60 s"
            time.sleep(0.1)


def redis_cli(port: int, *args: str) -> str:
    cli = find_cli()
    assert cli, "no redis-cli or valkey-cli next to the server binary"
    return subprocess.run(
        [cli, "-p", str(port), *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def wait_for_quiet(
    r: redis.Redis, t: Topology, order_ids: list[str], timeout_s: float = 120
) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with r.pipeline(transaction=False) as pipe:
                for order_id in order_ids:
                    pipe.hget(keys.order(order_id, t.tag_of(order_id)), "status")
                final = all(s in FINAL_STATUSES for s in pipe.execute())
            busy = 0
            for stream in (*t.all_streams(), *t.dead_streams()):
                last = r.xinfo_stream(stream)["last-generated-id"] if r.exists(stream) else None
                for group in r.xinfo_groups(stream) if last else []:
                    busy += group["pending"] + (group["last-delivered-id"] != last)
            if final and not busy:
                return
        except redis.ConnectionError:
            pass
        assert time.monotonic() < deadline, "the system did not settle"
        time.sleep(0.2)


def ended_cleanly(shop: Running, code: int) -> list[str]:
    """The launcher, stopped as Ctrl-C does, exited 0 (``code``) with no
    traceback in its log; returns the log's lines."""
    log = "\n".join(shop.lines)
    assert code == 0, log[-5000:]
    where = log.find("Traceback")
    assert where < 0, log[max(0, where - 1000) : where + 4000]
    return shop.lines


def listed(counts: Mapping[str, int]) -> str:
    """``completed 431, refunded 4356``: counts by name, in name order."""
    return ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
