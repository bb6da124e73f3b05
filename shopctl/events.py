"""``shopctl events``: the streams as readable lines, across every stream and
partition (on a cluster, every master), oldest first; ``--json``: one JSON
object a line; ``--follow``: then new entries as they come.

With ``--order ID`` the order's own events: its history names each event's
stream and entry id (``status_projector``), so they are read by id, in the
order's partition only, however long the streams are. An event trimmed from
its stream since (``STREAM_RETENTION_S``) is shown from the history, marked.
Following an order reads its partition's streams only.
"""

from __future__ import annotations

import asyncio
import heapq
import json
from collections import deque
from collections.abc import Callable
from typing import Any

from shop import keys
from streams import tracing
from streams.topology import Topology, entry_order

Entry = dict[str, Any]

# ANSI colors by what an event means for its order, for a terminal.
_COLORS = {"order.created": "36", "payment.completed": "34", "inventory.reserved": "32",
           "payment.failed": "31", "inventory.rejected": "33", "payment.refunded": "35",
           "dead_letter": "1;31"}


def entry(stream: str, entry_id: str, fields: dict[str, str], subject: str) -> Entry:
    """One stream entry as a record: when, where, what, about what, its data."""
    raw = fields.get("data")
    try:
        data: Any = json.loads(raw) if raw is not None else None
    except ValueError:
        data = raw
    found: Entry = {
        "at": fields.get("occurred_at") or fields.get("failed_at") or "",
        "stream": stream, "entry_id": entry_id, "type": fields.get("type", "?"),
        subject: fields.get(subject, ""),
    }
    if trace := tracing.parse(fields.get("traceparent")):
        found["trace_id"] = trace.trace_id
    if data is not None:
        found["data"] = data
    elif "reason" in fields:
        found["reason"] = fields["reason"]
        found["group"] = fields.get("group", "")
    else:
        found["fields"] = {k: v for k, v in fields.items() if k not in ("type", subject)}
    return found


def line(record: Entry, subject: str, color: bool = False) -> str:
    """A record as a line: ``when  stream  entry id  type  order=…  data``."""
    rest = record.get("data", record.get("reason", record.get("fields", "")))
    if not isinstance(rest, str):
        rest = json.dumps(rest, sort_keys=True, separators=(",", ":"))
    if "group" in record:
        rest = f"{record['group']}: {rest}"
    kind = f"{record['type']:<18}"
    if color and (code := _COLORS.get(record["type"])):
        kind = f"\033[{code}m{kind}\033[0m"
    label = subject.removesuffix("_id")
    return (f"{record['at'] or '-'}  {record['stream']:<24} {record['entry_id']:<18} {kind} "
            f"{label}={record[subject] or '-'}  {rest}")


def as_json(record: Entry) -> str:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False)


async def of_order(r: Any, topology: Topology, order_id: str) -> list[Entry]:
    """The order's events, oldest first ([] for an order that does not exist)."""
    tag = topology.tag_of(order_id)
    history = [json.loads(h) for h in await r.hvals(keys.order_history(order_id, tag))]
    history.sort(key=lambda h: (h["at"], entry_order(h["entry_id"])))
    async with r.pipeline(transaction=False) as pipe:
        for h in history:
            pipe.xrange(h["stream"], h["entry_id"], h["entry_id"])
        found = await pipe.execute()
    records = []
    for h, entries in zip(history, found, strict=True):
        if entries:
            entry_id, fields = entries[0]
            records.append(entry(h["stream"], entry_id, fields, topology.subject))
        else:  # trimmed from its stream since: what the history kept of it
            records.append({"at": h["at"], "stream": h["stream"], "entry_id": h["entry_id"],
                            "type": h["type"], topology.subject: order_id,
                            "reason": "(trimmed from the stream; kept in the history)"})
    return records


def streams_of(topology: Topology, stream: str | None, order_id: str | None = None) -> list[str]:
    """The streams to read: every stream and its dead letters, or one (in every
    partition, or one), or an order's partition's."""
    if stream is not None:
        names = _named(topology, stream)
    else:
        names = topology.all_streams() + topology.dead_streams()
    if order_id is not None:
        tag = topology.tag_of(order_id)
        names = [n for n in names if topology.split(n.removesuffix(".dead"))[1] == tag]
    return names


async def newest(r: Any, topology: Topology, names: list[str], limit: int) -> list[Entry]:
    """The newest ``limit`` entries of ``names`` together, oldest first."""
    if limit < 1:
        return []
    async with r.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.xrevrange(name, count=limit)
        found = await pipe.execute()
    merged = heapq.merge(*(reversed([(entry_order(i), name, i, f) for i, f in entries])
                           for name, entries in zip(names, found, strict=True)))
    last = deque(merged, maxlen=limit)
    return [entry(name, i, f, topology.subject) for _, name, i, f in last]


async def newest_ids(r: Any, names: list[str]) -> dict[str, str]:
    """Each stream's newest entry id now ("0-0" for an empty one): where
    following it starts."""
    async with r.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.xrevrange(name, count=1)
        found = await pipe.execute()
    return {name: entries[0][0] if entries else "0-0"
            for name, entries in zip(names, found, strict=True)}


async def follow(r: Any, topology: Topology, names: list[str], after: dict[str, str],
                 show: Callable[[Entry], None], keep: Callable[[Entry], bool] = lambda _: True,
                 poll_s: float = 0.25, stop: Callable[[], bool] = lambda: False) -> None:
    """Show each entry of ``names`` added after ``after``'s ids (``newest_ids``),
    oldest first, until ``stop()``. It polls (XRANGE from the last id seen)
    rather than blocking: a blocking read cannot span a cluster's slots."""
    last = dict(after)
    while not stop():
        async with r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.xrange(name, f"({last[name]}", "+", count=1000)
            found = await pipe.execute()
        fresh = []
        for name, entries in zip(names, found, strict=True):
            if entries:
                last[name] = entries[-1][0]
            fresh += [(entry_order(i), name, i, f) for i, f in entries]
        for _, name, i, f in sorted(fresh):
            record = entry(name, i, f, topology.subject)
            if keep(record):
                show(record)
        if not fresh:
            await asyncio.sleep(poll_s)


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
