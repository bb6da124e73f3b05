"""Bounded streams: trim old entries, never one that some group still needs.

The safe point of a stream is the oldest entry that one of its groups has not
finished with: the oldest pending entry of a group, or else the first entry
after the group's last-delivered id. Everything older was handled by every
group. A trim removes entries older than both the retention and the safe
point (XTRIM MINID), so ``redis-cli XRANGE`` still shows the recent past.

A stream is left alone while any of the groups that should read it
(the topology's readers) does not exist yet: a worker that has not started yet
still finds every event when it does.

The safe point only moves forward (a group's last-delivered id and its oldest
pending id only grow), so a trim computed from a slightly stale reading is
still safe. Any consumer may run it, as often as it likes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import redis

from streams.topology import Topology, entry_order


def _next_id(entry_id: str) -> str:
    ms, seq = entry_id.split("-")
    return f"{ms}-{int(seq) + 1}"


def _older(*ids: str) -> str:
    return min(ids, key=entry_order)


def safe_points(
    client: redis.Redis, topology: Topology, streams: Iterable[str]
) -> dict[str, str | None]:
    """For each stream, the id below which every reading group is done, or None
    when a group that should read it does not exist yet (or the stream does not)."""
    streams = list(streams)
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xinfo_groups(stream)
    infos = pipe.execute(raise_on_error=False)
    points: dict[str, str | None] = {}
    oldest_pending: list[tuple[str, str]] = []
    pipe = client.pipeline(transaction=False)
    for stream, groups in zip(streams, infos, strict=True):
        if isinstance(groups, Exception):  # no such stream, or its node did not answer
            points[stream] = None
            continue
        by_name = {g["name"]: g for g in groups}
        if not set(topology.readers_of(stream)) <= set(by_name) or not by_name:
            points[stream] = None
            continue
        points[stream] = _older(*(_next_id(g["last-delivered-id"]) for g in by_name.values()))
        for name, group in by_name.items():
            if group["pending"]:
                pipe.xpending(stream, name)
                oldest_pending.append((stream, name))
    for (stream, _name), summary in zip(oldest_pending, pipe.execute(raise_on_error=False),
                                        strict=True):
        if isinstance(summary, Exception):  # unknown now: not trimmed this time
            points[stream] = None
            continue
        point = points[stream]
        if summary["min"] and point is not None:
            points[stream] = _older(point, summary["min"])
    return points


def trim(
    client: redis.Redis, topology: Topology, streams: Iterable[str], retention_s: float
) -> dict[str, int]:
    """Trim each stream to ``retention_s`` of history, never past its safe
    point; return how many entries each trim removed."""
    horizon = f"{int((time.time() - retention_s) * 1000)}-0"
    points = {s: p for s, p in safe_points(client, topology, streams).items() if p is not None}
    if not points:
        return {}
    pipe = client.pipeline(transaction=False)
    for stream, point in points.items():
        pipe.xtrim(stream, minid=_older(point, horizon), approximate=False)
    return {stream: removed for stream, removed in zip(points, pipe.execute(
        raise_on_error=False), strict=True) if isinstance(removed, int)}
