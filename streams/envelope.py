"""The flat envelope every stream entry travels in, its layout defined once.

An entry is a set of string fields, readable in ``redis-cli XRANGE``::

    type          payment.completed
    event_id      3f0c...            unique per event
    order_id      ord_5e2b...        the subject: what it is about (the topology names the field)
    occurred_at   2026-11-21T05:01:02.123Z   UTC
    causation_id  8d1a...            the event that caused it ('' for the first)
    v             1                  schema version
    traceparent   00-4bf9...-00f0...-01      W3C trace context: its trace, the hop that wrote it
    data          {"customer_id": ...}       JSON of the typed payload

``layout`` gives these names in order; Lua steps publish with the function
``lua_publish`` renders from the same layout. ``Envelope.parse`` turns fields
back into an envelope or raises ``MalformedEntry`` with a reason a person can
act on; the consumer runner moves such entries to the dead-letter stream.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from streams import tracing
from streams.topology import Topology

SCHEMA_VERSION = "1"


def layout(subject: str) -> tuple[str, ...]:
    """The envelope's fields, in the order they are written."""
    return ("type", *header_fields(subject), "data")


def header_fields(subject: str) -> tuple[str, ...]:
    """The header's fields (``Header.as_args``), in the order they are written."""
    return ("event_id", subject, "occurred_at", "causation_id", "v", "traceparent")


# How many script arguments a header takes.
HEADER_ARGS = len(header_fields(""))


def lua_publish(subject: str, first_arg: int) -> str:
    """Lua: ``publish(stream, type, data)`` XADDs an envelope whose header is
    ``ARGV[first_arg ..]`` (``Header.as_args``), and returns the entry id."""
    names = header_fields(subject)
    header = ", ".join(f"'{name}', ARGV[{first_arg + i}]" for i, name in enumerate(names))
    return f"""
local header = {{{header}}}
local function publish(stream, event_type, data)
  local fields = {{'type', event_type}}
  for i = 1, #header do fields[#fields + 1] = header[i] end
  fields[#fields + 1] = 'data'
  fields[#fields + 1] = data
  return redis.call('XADD', stream, '*', unpack(fields))
end
"""


class MalformedEntry(ValueError):
    """A stream entry that is not a valid envelope; the message says why."""


_now: tuple[int, str] = (0, "")  # the last millisecond written, and how


def utc_stamp() -> tuple[int, str]:
    """Now as milliseconds since the epoch and as ``utc_now`` writes it. A
    worker stamps a batch of events within the same millisecond or two: the
    text is made once per millisecond."""
    global _now
    ms = time.time_ns() // 1_000_000
    if ms != _now[0]:
        seconds, millis = divmod(ms, 1000)
        moment = datetime.fromtimestamp(seconds, UTC).replace(microsecond=millis * 1000)
        _now = (ms, moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    return _now


def utc_now() -> str:
    """The current time in UTC, ISO 8601 with milliseconds and a Z."""
    return utc_stamp()[1]


def new_id() -> str:
    """128 random bits in hex, like a uuid4's hex. An event id must be unique,
    not secret: the process's own generator (seeded from the OS) does, without
    a system call per event."""
    return f"{random.getrandbits(128):032x}"


@dataclass(frozen=True, slots=True)
class Header:
    """Everything of an envelope but its type and data: what a handler fixes
    in advance for the event its atomic step may publish."""

    event_id: str
    subject: str
    occurred_at: str
    causation_id: str
    v: str = SCHEMA_VERSION
    traceparent: str = ""  # '' on an event written before it was carried

    @classmethod
    def new(cls, subject: str, causation_id: str = "") -> Header:
        """A header for an event published now, in the trace of the hop in hand
        (``tracing.current()``; a new trace when there is none)."""
        hop = tracing.current() or tracing.child(None)
        return cls(new_id(), subject, utc_now(), causation_id, SCHEMA_VERSION, hop.traceparent)

    def as_args(self) -> list[str]:
        """The header as script arguments, in the order of ``header_fields``."""
        return [self.event_id, self.subject, self.occurred_at, self.causation_id, self.v,
                self.traceparent]


@dataclass(frozen=True, slots=True)
class Envelope:
    type: str
    header: Header
    payload: Any  # the event type's payload model
    tag: str = ""  # the hash tag of the partition it arrived on ('' with one)

    @property
    def event_id(self) -> str:
        return self.header.event_id

    @property
    def subject(self) -> str:
        """What the event is about (for the shop: the order id)."""
        return self.header.subject

    @property
    def occurred_at(self) -> str:
        return self.header.occurred_at

    @classmethod
    def new(cls, topology: Topology, payload: Any, subject: str,
            causation_id: str = "") -> Envelope:
        return cls(topology.type_of(payload), Header.new(subject, causation_id), payload)

    def to_fields(self, topology: Topology) -> dict[str, str]:
        values = (self.type, *self.header.as_args(), self.payload.model_dump_json())
        return dict(zip(layout(topology.subject), values, strict=True))

    @classmethod
    def parse(cls, fields: dict[str, str], topology: Topology, tag: str = "") -> Envelope:
        """Parse the fields of a stream entry, or raise ``MalformedEntry``."""
        names = layout(topology.subject)
        # causation_id is present but empty on the first event of a subject;
        # traceparent is missing from events written before it was carried.
        missing = [
            name
            for name in names
            if name != "traceparent"
            and (name not in fields or (not fields[name] and name != "causation_id"))
        ]
        if missing:
            raise MalformedEntry(f"missing field(s): {', '.join(missing)}")
        event_type = fields["type"]
        kind = topology.event(event_type)
        if kind is None:
            raise MalformedEntry(f"unknown event type {event_type!r}")
        if fields["v"] != SCHEMA_VERSION:
            raise MalformedEntry(
                f"unsupported schema version v={fields['v']!r} (this code reads v={SCHEMA_VERSION})"
            )
        try:
            datetime.fromisoformat(fields["occurred_at"])
        except ValueError:
            raise MalformedEntry(
                f"occurred_at is not an ISO 8601 time: {fields['occurred_at']!r}"
            ) from None
        try:
            payload = kind.payload.model_validate_json(fields["data"])
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'data'}: {err['msg']}"
                for err in exc.errors()
            )
            raise MalformedEntry(f"bad data for {event_type}: {problems}") from None
        subject = fields[topology.subject]
        if topology.tag_of(subject) != tag:
            raise MalformedEntry(
                f"{topology.subject} {subject!r} belongs to partition "
                f"{topology.tag_of(subject) or 'none'}, not {tag or 'none'}"
            )
        header = Header(fields["event_id"], subject, fields["occurred_at"],
                        fields["causation_id"], fields["v"], fields.get("traceparent", ""))
        return cls(event_type, header, payload, tag)
