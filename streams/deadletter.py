"""The record of a message that could not be handled.

A dead letter is written to ``<stream>.dead`` as flat fields, readable in
``redis-cli XRANGE orders.created.dead - +``::

    type        dead_letter
    order_id    the order it was about, if the entry named one
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
from dataclasses import asdict, dataclass

from streams.envelope import MalformedEntry, utc_now

DEAD_LETTER_TYPE = "dead_letter"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    order_id: str
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
        deliveries: int,
    ) -> DeadLetter:
        return cls(
            order_id=fields.get("order_id", ""),
            reason=reason,
            stream=stream,
            entry_id=entry_id,
            group=group,
            deliveries=deliveries,
            failed_at=utc_now(),
            original=dict(fields),
        )

    def to_fields(self) -> dict[str, str]:
        fields = {"type": DEAD_LETTER_TYPE}
        for name, value in asdict(self).items():
            fields[name] = json.dumps(value, sort_keys=True) if name == "original" else str(value)
        return fields

    @classmethod
    def parse(cls, fields: dict[str, str]) -> DeadLetter:
        if fields.get("type") != DEAD_LETTER_TYPE:
            raise MalformedEntry(f"not a dead letter (type={fields.get('type')!r})")
        try:
            return cls(
                order_id=fields["order_id"],
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
