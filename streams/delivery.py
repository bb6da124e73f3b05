"""One message on its way through the runner, and what a middleware is."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from streams import tracing
from streams.deadletter import DeadLetter
from streams.envelope import Envelope
from streams.outcomes import Ack, Outcome, Reject
from streams.topology import is_dead


@dataclass(slots=True)
class Delivery:
    """One message on its way through the runner, and what became of it."""

    stream: str
    entry_id: str
    fields: dict[str, str]
    group: str
    subject: str = "?"  # what the message is about (its topology's subject field)
    label: str = "subject"  # what a log line calls the subject ("order")
    deliveries: int = 1
    event: Envelope | DeadLetter | None = None
    outcome: Outcome | None = None
    result: Any = None
    error: BaseException | None = None
    retry_in_s: float = 0.0  # after an error: when the runner tries again
    waits: str | None = None  # after a node's failure: what it waits for
    elapsed_ms: float = 0.0
    handler_s: float = 0.0  # the handler's own time to decide
    commit_s: float = 0.0  # from the batch's decisions to its outcomes applied
    span: tracing.Span | None = None  # this hop of the message's trace
    hooks: list[Generator[None, Delivery, None]] = field(default_factory=list)

    @property
    def trace_id(self) -> str:
        return self.span.context.trace_id if self.span else ""


# A middleware is a generator function: the code before its ``yield`` runs
# before the handler, the code after it once the outcome is committed (or has
# failed), in reverse order. See ``streams.middleware``.
Middleware = Callable[[Delivery], Generator[None, Delivery, None]]


def reject(delivery: Delivery, reason: str) -> Outcome:
    """Dead-letter the message, unless it is a dead letter already: one that
    cannot be handled stays where it is, in the dead-letter stream, for an
    operator. It is not moved again."""
    if is_dead(delivery.stream):
        return Ack(f"dead letter {delivery.entry_id} left in {delivery.stream}: {reason}")
    return Reject(reason)
