"""``shopctl events``: the streams as readable lines, across every stream and
partition (on a cluster, every master), oldest first.

With ``--order ID`` the order's own events: its history names each event's
stream and entry id (``status_projector``), so they are read by id, in the
order's partition only, however long the streams are. An event trimmed from
its stream since (``STREAM_RETENTION_S``) is shown from the history, marked.
"""

from __future__ import annotations

import heapq
import json
from collections import deque
from typing import Any

from shop import keys
from streams.topology import Topology, entry_order


def line(stream: str, entry_id: str, fields: dict[str, str], subject: str) -> str:
    """One entry as a line: when, where, what, about what, and its data."""
    when = fields.get("occurred_at") or fields.get("failed_at") or "-"
    kind = fields.get("type", "?")
    about = fields.get(subject, "-")
    rest = fields.get("data") or fields.get("reason") or json.dumps(
        {k: v for k, v in fields.items() if k not in ("type", subject)}, sort_keys=True)
    label = subject.removesuffix("_id")
    return f"{when}  {stream:<24} {entry_id:<18} {kind:<18} {label}={about}  {rest}"


async def of_order(r: Any, topology: Topology, order_id: str) -> list[str]:
    """The order's events, oldest first ([] for an order that does not exist)."""
    tag = topology.tag_of(order_id)
    history = [json.loads(h) for h in await r.hvals(keys.order_history(order_id, tag))]
    history.sort(key=lambda h: (h["at"], entry_order(h["entry_id"])))
    async with r.pipeline(transaction=False) as pipe:
        for h in history:
            pipe.xrange(h["stream"], h["entry_id"], h["entry_id"])
        found = await pipe.execute()
    lines = []
    for h, entries in zip(history, found, strict=True):
        if entries:
            entry_id, fields = entries[0]
            lines.append(line(h["stream"], entry_id, fields, topology.subject))
        else:  # trimmed from its stream since: what the history kept of it
            lines.append(f"{h['at']}  {h['stream']:<24} {h['entry_id']:<18} {h['type']:<18} "
                         f"order={order_id}  (trimmed from the stream; kept in the history)")
    return lines


async def newest(r: Any, topology: Topology, stream: str | None, limit: int) -> list[str]:
    """The newest ``limit`` entries of every stream (or of one, in every
    partition), oldest first."""
    names = (topology.all_streams() + topology.dead_streams() if stream is None else
             _named(topology, stream))
    async with r.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.xrevrange(name, count=limit)
        found = await pipe.execute()
    merged = heapq.merge(*(reversed([(entry_order(i), name, i, f) for i, f in entries])
                           for name, entries in zip(names, found, strict=True)))
    last = deque(merged, maxlen=limit)
    return [line(name, i, f, topology.subject) for _, name, i, f in last]


def _named(topology: Topology, stream: str) -> list[str]:
    dead = stream.endswith(".dead")
    base = stream.removesuffix(".dead")
    if base in topology.streams:
        names = topology.partitioned(base)
    elif topology.split(base)[0] in topology.streams:
        names = [base]
    else:
        raise ValueError(f"unknown stream {stream!r}: one of {', '.join(topology.streams)} "
                         "(with .dead for its dead letters, {pN} for one partition)")
    return [n + ".dead" for n in names] if dead else names
