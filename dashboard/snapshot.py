"""What the dashboard shows, read from Redis: one snapshot, made at most once
per interval however many pages watch, and shared by them.

- the flow: each stream (its partitions added up) with who writes it, its
  rate (entries added a second since the last snapshot), length and dead
  letters, and each group reading it (the flow's, then any other, such as a
  gateway's subscription) with its lag and pending;
- orders per status over the last minutes: the orders created in each
  10-second bucket, by the status they have now (each status's index is
  scored by creation time: a ZCOUNT a bucket, no state kept in the API);
- the newest orders, the newest dead letters, the gateways' endpoints.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from order_api import ops, orders
from shop import keys
from shop.statuses import STATUSES
from shop.topology import WRITERS, with_gateway_stores
from streams import deadletter
from streams.envelope import utc_now
from streams.topology import Topology

BUCKET_S = 10
BUCKETS = 30  # five minutes
RECENT = 12
DEAD = 20


class Board:
    """The shared snapshot of one API process."""

    def __init__(self, client: Any, topology: Topology, interval_s: float = 1.0) -> None:
        self.client, self.topology, self.interval_s = client, topology, interval_s
        self._lock = asyncio.Lock()
        self._made_at = 0.0
        self._last: dict[str, Any] | None = None
        self._added: tuple[float, dict[str, int]] | None = None  # for the rates

    async def snapshot(self) -> dict[str, Any]:
        async with self._lock:
            now = time.monotonic()
            if self._last is None or now - self._made_at >= self.interval_s:
                self._last = await self._make(now)
                self._made_at = now
            return self._last

    async def _make(self, now: float) -> dict[str, Any]:
        topology = await with_gateway_stores(self.client, self.topology)
        health = await ops.streams(self.client, topology)
        flow = self._flow(topology, health, now)
        statuses = await self._statuses()
        recent = await orders.page(self.client, self.topology, None, None, 0, RECENT)
        dead = await deadletter.list_dead(self.client, topology, None, DEAD)
        endpoints = await ops.endpoints(self.client)
        return {
            "at": utc_now(),
            "partitions": self.topology.partitions,
            "flow": flow,
            "statuses": statuses,
            "recent": [o.model_dump(mode="json") for o in recent.items],
            "orders_total": recent.total,
            "dead_letters": [
                {"ref": s.ref, "order_id": s.letter.subject if s.letter else "",
                 "group": s.letter.group if s.letter else "",
                 "reason": s.letter.reason if s.letter else f"not a dead letter: {s.fields}",
                 "failed_at": s.letter.failed_at if s.letter else ""}
                for s in dead],
            "dead_total": sum(s["dead_letters"] for s in flow),
            "endpoints": [e.model_dump(mode="json") for e in endpoints],
        }

    def _flow(self, topology: Topology, health: list[Any], now: float) -> list[dict[str, Any]]:
        """Each stream, its partitions added up, in the order of the flow."""
        by_name: dict[str, dict[str, Any]] = {}
        added: dict[str, int] = {}
        for stream in health:
            base, _ = topology.split(stream.name)
            row = by_name.setdefault(base, {
                "name": base, "writer": WRITERS.get(base, "gateway"), "length": 0,
                "added": 0, "dead_letters": 0, "rate_per_s": 0.0, "groups": {}})
            row["length"] += stream.length
            row["added"] += stream.entries_added
            row["dead_letters"] += stream.dead_letters
            for group in stream.groups:
                seen = row["groups"].setdefault(group.name, {"name": group.name, "lag": 0,
                                                             "pending": 0, "consumers": 0})
                seen["lag"] += group.lag or 0
                seen["pending"] += group.pending
                seen["consumers"] = max(seen["consumers"], group.consumers)
            added[base] = row["added"]
        if self._added is not None:
            then, before = self._added
            elapsed = max(now - then, 1e-3)
            for base, row in by_name.items():
                row["rate_per_s"] = round(max(0, added[base] - before.get(base, added[base]))
                                          / elapsed, 1)
        self._added = (now, added)
        for row in by_name.values():
            # The flow's readers, in its order (each shown, even before it exists), then
            # any other group reading the stream (a gateway's subscription).
            readers = [*topology.readers_of(row["name"]),
                       *sorted(set(row["groups"]) - set(topology.readers_of(row["name"])))]
            row["groups"] = [row["groups"].get(g, {"name": g, "lag": 0, "pending": 0,
                                                   "consumers": 0}) for g in readers]
        return list(by_name.values())

    async def _statuses(self) -> dict[str, Any]:
        """Orders created in each bucket of the last minutes, by status now;
        and every order by status."""
        end = int(time.time() // BUCKET_S + 1) * BUCKET_S * 1000
        edges = [end - (BUCKETS - i) * BUCKET_S * 1000 for i in range(BUCKETS + 1)]
        tags = self.topology.tags()
        async with self.client.pipeline(transaction=False) as pipe:
            for status in STATUSES:
                for tag in tags:
                    index = keys.orders_by_status(status, tag)
                    pipe.zcard(index)
                    for low, high in zip(edges, edges[1:], strict=False):
                        pipe.zcount(index, low, f"({high}")
            replies = await pipe.execute()
        width = 1 + BUCKETS
        series, totals = {}, {}
        for i, status in enumerate(STATUSES):
            rows = [replies[(i * len(tags) + j) * width:(i * len(tags) + j + 1) * width]
                    for j in range(len(tags))]
            totals[status] = sum(row[0] for row in rows)
            series[status] = [sum(row[1 + b] for row in rows) for b in range(BUCKETS)]
        return {"bucket_s": BUCKET_S, "since_ms": edges[0], "series": series, "totals": totals}
