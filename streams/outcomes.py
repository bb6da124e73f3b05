"""What a handler says about a message; the runner maps it to Redis.

- ``Apply``: run a Lua step (state change + outcome event) atomically with
  the acknowledgement;
- ``Ack``: nothing to change, acknowledge (with a note for the log; a
  ``duplicate`` when the message had been handled before);
- ``Reject``: the message can never succeed; move it to ``<stream>.dead``;
- ``Chain``: sub-steps first, each an atomic script on keys of its own slot
  (another partition, a product), whose answers decide the next outcome;
  every sub-step must be idempotent, since a crash between two of them
  leaves the message pending and it is handled again from the start;
- raising an exception: leave it pending; it is delivered again later, up to
  the runner's ``max_deliveries``, then dead-lettered with the error.

Handler code never calls XACK itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.envelope import Header
from streams.scripts import Script, Step


def _describe_result(result: list) -> str:
    return " ".join(str(part) for part in result)


@dataclass(frozen=True, slots=True)
class Apply:
    step: Step
    keys: Sequence[str]
    args: Sequence[str | int]
    # The header of the event the step may publish; None for a step that
    # publishes nothing.
    header: Header | None = None
    # Turns the step's result into the rest of the log line.
    describe: Callable[[list], str] = field(default=_describe_result)

    def __post_init__(self) -> None:
        if self.step.publishes != (self.header is not None):
            raise ValueError(f"step {self.step.name!r}: a header is needed exactly when the "
                             "step publishes")


@dataclass(frozen=True, slots=True)
class Ack:
    note: str
    # Whether the message had been handled before (a second delivery): what
    # the metrics call a duplicate, as a step answering 'duplicate' is.
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str


@dataclass(frozen=True, slots=True)
class Call:
    """One atomic script of a ``Chain``, on keys that share a slot."""

    script: Script
    keys: Sequence[str]
    args: Sequence[str | int]


@dataclass(frozen=True, slots=True)
class Chain:
    """Run ``calls`` (all of a batch's chains in one round trip), then hand
    their answers, in order, to ``then`` for the next outcome."""

    calls: Sequence[Call]
    then: Callable[[list[Any]], Outcome]


Outcome = Apply | Ack | Reject | Chain
