"""The record of a message that could not be handled.

A dead letter is written to ``<stream>.dead`` as flat fields, readable in
``redis-cli XRANGE orders.created.dead - +``::

    type        dead_letter
    order_id    its subject, if the entry named one (the topology names the field)
    reason      why it could not be handled
    stream      the stream it came from
    entry_id    its id there
    group       the consumer group that gave up on it
    deliveries  how many times it was delivered
    failed_at   UTC time
    original    JSON of the original fields, to inspect or replay
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from streams.envelope import MalformedEntry, utc_now
from streams.scripts import Script, evaluate
from streams.topology import DEAD_SUFFIX, Topology, dead, entry_order

DEAD_LETTER_TYPE = "dead_letter"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    subject: str
    reason: str
    stream: str
    entry_id: str
    group: str
    deliveries: int
    failed_at: str
    original: dict[str, str]

    @classmethod
    def of(
        cls, stream: str, entry_id: str, fields: dict[str, str], group: str, reason: str,
        deliveries: int, subject_field: str,
    ) -> DeadLetter:
        return cls(
            subject=fields.get(subject_field, ""),
            reason=reason,
            stream=stream,
            entry_id=entry_id,
            group=group,
            deliveries=deliveries,
            failed_at=utc_now(),
            original=dict(fields),
        )

    def to_fields(self, subject_field: str) -> dict[str, str]:
        fields = {"type": DEAD_LETTER_TYPE}
        for name, value in asdict(self).items():
            name = subject_field if name == "subject" else name
            fields[name] = json.dumps(value, sort_keys=True) if name == "original" else str(value)
        return fields

    @classmethod
    def parse(cls, fields: dict[str, str], subject_field: str) -> DeadLetter:
        if fields.get("type") != DEAD_LETTER_TYPE:
            raise MalformedEntry(f"not a dead letter (type={fields.get('type')!r})")
        try:
            return cls(
                subject=fields[subject_field],
                reason=fields["reason"],
                stream=fields["stream"],
                entry_id=fields["entry_id"],
                group=fields["group"],
                deliveries=int(fields["deliveries"]),
                failed_at=fields["failed_at"],
                original=json.loads(fields["original"]),
            )
        except (KeyError, ValueError) as exc:
            raise MalformedEntry(f"bad dead letter: {exc!r}") from None


# -- operating on dead letters: list, replay, purge ------------------------------

# Put a dead letter's original fields back on its stream and delete it (and
# other dead letters of the same entry), atomically.
# KEYS: dead stream, original stream. ARGV: dead entry id, then other dead ids to delete.
REPLAY = Script(
    "replay_dead_letter",
    """
local found = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])
if #found == 0 then return {'missing'} end
local fields, original, stream = found[1][2], nil, nil
for i = 1, #fields, 2 do
  if fields[i] == 'original' then original = fields[i + 1] end
  if fields[i] == 'stream' then stream = fields[i + 1] end
end
if stream ~= KEYS[2] or not original then return {'unreadable'} end
local args = {}
for name, value in pairs(cjson.decode(original)) do
  args[#args + 1] = name
  args[#args + 1] = tostring(value)
end
if #args == 0 then return {'empty'} end
local id = redis.call('XADD', KEYS[2], '*', unpack(args))
redis.call('XDEL', KEYS[1], unpack(ARGV))
return {'replayed', id}
""",
)


@dataclass(frozen=True, slots=True)
class Stored:
    """A dead letter where it sits: ``ref`` (``orders.created.dead/1763...-0``)
    names it for replay and purge. ``letter`` is None for an entry that is not
    a dead letter (written there by hand)."""

    dead_stream: str
    entry_id: str
    letter: DeadLetter | None
    fields: dict[str, str]

    @property
    def ref(self) -> str:
        return f"{self.dead_stream}/{self.entry_id}"


def parse_ref(topology: Topology, ref: str) -> tuple[str, str]:
    """``orders.created.dead/1763...-0`` -> (dead stream, entry id), or ValueError."""
    stream, _, entry_id = ref.partition("/")
    if not _known(topology, stream.removesuffix(DEAD_SUFFIX)) or not stream.endswith(DEAD_SUFFIX):
        names = ", ".join(dead(s) for s in topology.streams)
        raise ValueError(f"{ref!r}: the part before '/' must be one of {names} (with a "
                         "partition's tag before .dead, when there are partitions)")
    if not _ENTRY_ID.fullmatch(entry_id):
        raise ValueError(f"{ref!r}: the part after '/' must be an entry id like 1763700000000-0")
    return stream, entry_id


def _dead_streams(topology: Topology, stream: str | None) -> list[str]:
    """The dead streams of one stream (of one partition, or of every partition
    when it is named without a tag), or of all."""
    if stream is None:
        return topology.dead_streams()
    name = stream.removesuffix(DEAD_SUFFIX)
    if name in topology.streams:
        return [dead(s) for s in topology.partitioned(name)]
    if not _known(topology, name):
        raise ValueError(f"unknown stream {stream!r}: one of {', '.join(topology.streams)}")
    return [dead(name)]  # one partition's (none such with fewer partitions: nothing there)


def _known(topology: Topology, stream: str) -> bool:
    """A stream of the topology, of any partition."""
    return topology.split(stream)[0] in topology.streams


async def list_dead(
    client: Any, topology: Topology, stream: str | None = None, limit: int = 100
) -> list[Stored]:
    """The newest ``limit`` dead letters (of one stream, or all), newest first."""
    streams = _dead_streams(topology, stream)
    async with client.pipeline(transaction=False) as pipe:
        for name in streams:
            pipe.xrevrange(name, count=limit)
        replies = await pipe.execute()
    found = []
    for name, entries in zip(streams, replies, strict=True):
        for entry_id, fields in entries:
            try:
                letter: DeadLetter | None = DeadLetter.parse(fields, topology.subject)
            except MalformedEntry:
                letter = None
            found.append(Stored(name, entry_id, letter, fields))
    found.sort(key=lambda s: entry_order(s.entry_id), reverse=True)
    return found[:limit]


async def replay(client: Any, topology: Topology, refs: list[str]) -> dict[str, str]:
    """Put each dead letter's original entry back on its stream, oldest first,
    and delete the dead letter. Dead letters of one entry (one per group that
    gave up on it) are replayed once. Returns, per ref, the new entry id or
    why it was not replayed."""
    parsed = sorted({parse_ref(topology, ref) for ref in refs}, key=lambda p: entry_order(p[1]))
    async with client.pipeline(transaction=False) as pipe:
        for dead_stream, entry_id in parsed:
            pipe.xrange(dead_stream, entry_id, entry_id)
        entries = await pipe.execute()
    # The same original entry, dead-lettered by several groups: replay it once.
    first: dict[tuple[str, str], tuple[str, str]] = {}
    also: dict[tuple[str, str], list[str]] = {}
    for (dead_stream, entry_id), found in zip(parsed, entries, strict=True):
        original = (dead_stream, found[0][1].get("entry_id", entry_id)) if found else None
        if original and original in first:
            also.setdefault(first[original], []).append(entry_id)
        elif original:
            first[original] = (dead_stream, entry_id)
    results: dict[str, str] = {}
    for dead_stream, entry_id in parsed:
        ref = f"{dead_stream}/{entry_id}"
        if ref in results:
            continue
        stream = dead_stream.removesuffix(DEAD_SUFFIX)
        extra = also.get((dead_stream, entry_id), [])
        answer = await evaluate(client, REPLAY, [dead_stream, stream], [entry_id, *extra])
        results[ref] = {
            "missing": "no such dead letter",
            "unreadable": "not a dead letter of this stream; left alone",
            "empty": "the original entry had no fields; left alone",
        }.get(answer[0], f"replayed as {stream} {answer[-1]}")
        for other in extra:
            results[f"{dead_stream}/{other}"] = (
                f"same entry as {ref}: " + ("deleted, replayed once" if answer[0] == "replayed"
                                            else "left alone")
            )
    return results


async def purge(client: Any, topology: Topology, refs: list[str]) -> int:
    """Delete these dead letters; return how many existed."""
    parsed = [parse_ref(topology, ref) for ref in refs]
    async with client.pipeline(transaction=False) as pipe:
        for dead_stream, entry_id in parsed:
            pipe.xdel(dead_stream, entry_id)
        return sum(await pipe.execute())


# Each part below 2**63, so that Redis always reads it as an entry id.
_ENTRY_ID = re.compile(r"\d{1,19}-\d{1,19}")
