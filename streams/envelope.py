"""The flat envelope every stream entry travels in.

An entry is a set of string fields, readable in ``redis-cli XRANGE``::

    type          payment.completed
    event_id      3f0c...            unique per event
    order_id      ord_5e2b...        the order it is about
    occurred_at   2026-11-21T05:01:02.123Z   UTC
    causation_id  8d1a...            the event that caused it ('' for the first)
    v             1                  schema version
    data          {"customer_id": ...}       JSON of the typed payload

``Envelope.parse`` turns fields back into an envelope or raises
``MalformedEntry`` with a reason a person can act on; the consumer runner
moves such entries to the dead-letter stream.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from streams.events import EVENTS, Payload, type_of

SCHEMA_VERSION = "1"
REQUIRED_FIELDS = ("type", "event_id", "order_id", "occurred_at", "causation_id", "v", "data")


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
    order_id: str
    occurred_at: str
    causation_id: str
    v: str = SCHEMA_VERSION

    @classmethod
    def new(cls, order_id: str, causation_id: str = "") -> Header:
        return cls(new_id(), order_id, utc_now(), causation_id)

    def as_args(self) -> list[str]:
        return [self.event_id, self.order_id, self.occurred_at, self.causation_id, self.v]


@dataclass(frozen=True, slots=True)
class Envelope:
    type: str
    header: Header
    payload: Payload

    @property
    def event_id(self) -> str:
        return self.header.event_id

    @property
    def order_id(self) -> str:
        return self.header.order_id

    @property
    def occurred_at(self) -> str:
        return self.header.occurred_at

    @classmethod
    def new(cls, payload: Payload, order_id: str, causation_id: str = "") -> Envelope:
        return cls(type_of(payload), Header.new(order_id, causation_id), payload)

    def to_fields(self) -> dict[str, str]:
        h = self.header
        return {
            "type": self.type,
            "event_id": h.event_id,
            "order_id": h.order_id,
            "occurred_at": h.occurred_at,
            "causation_id": h.causation_id,
            "v": h.v,
            "data": self.payload.model_dump_json(),
        }

    @classmethod
    def parse(cls, fields: dict[str, str]) -> Envelope:
        """Parse the fields of a stream entry, or raise ``MalformedEntry``."""
        # causation_id is present but empty on the first event of an order.
        missing = [
            name
            for name in REQUIRED_FIELDS
            if name not in fields or (not fields[name] and name != "causation_id")
        ]
        if missing:
            raise MalformedEntry(f"missing field(s): {', '.join(missing)}")
        event_type = fields["type"]
        if event_type not in EVENTS:
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
        model = EVENTS[event_type][0]
        try:
            payload = model.model_validate_json(fields["data"])
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'data'}: {err['msg']}"
                for err in exc.errors()
            )
            raise MalformedEntry(f"bad data for {event_type}: {problems}") from None
        header = Header(
            fields["event_id"],
            fields["order_id"],
            fields["occurred_at"],
            fields["causation_id"],
            fields["v"],
        )
        return cls(event_type, header, payload)
