"""Applying a batch's outcomes to Redis, in one pipeline.

Consecutive messages whose outcome is the same Lua step share one call of it
(which acknowledges each message with its own change); a message to
dead-letter gets its own script; messages that only need acknowledging share
one XACK per stream. Scripts are loaded in the same
pipeline the first time they are used and again if the server lost them
(NOSCRIPT, after a restart). A step that answers ``dead_letter`` is
dead-lettered in a second pipeline.
"""

from __future__ import annotations

from typing import Any

import redis

from streams import keys
from streams.deadletter import DeadLetter
from streams.delivery import Delivery, reject
from streams.outcomes import Apply, Reject
from streams.scripts import DEAD_LETTER, pairs


class Committer:
    def __init__(self, client: redis.Redis, group: str) -> None:
        self.client = client
        self.group = group
        self.loaded: set[str] = set()  # script shas known to be on the server

    def forget_scripts(self) -> None:
        """After a reconnect the server may be a new one, without our scripts."""
        self.loaded.clear()

    def commit(self, batch: list[Delivery]) -> None:
        """Apply the outcome of every decided message; a command that fails
        leaves its error on the delivery, and its message pending."""
        todo = [d for d in batch if d.error is None and d.outcome is not None]
        for _attempt in range(2):
            if not todo:
                return
            results = self._execute(todo)
            again: list[Delivery] = []
            for delivery, result in zip(todo, results, strict=True):
                if isinstance(result, redis.exceptions.NoScriptError):
                    self.loaded.clear()  # Redis restarted and lost its script cache
                    again.append(delivery)
                elif isinstance(result, Exception):
                    delivery.error = result
                elif (
                    isinstance(delivery.outcome, Apply)
                    and isinstance(result, list)
                    and result
                    and result[0] == "dead_letter"
                ):
                    delivery.outcome = reject(delivery, str(result[1]))
                    again.append(delivery)
                else:
                    delivery.result = result
            todo = again
        for delivery in todo:
            delivery.error = RuntimeError("the step could not be committed; will retry")

    def _execute(self, deliveries: list[Delivery]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        loads = 0
        for delivery in deliveries:
            outcome = delivery.outcome
            if isinstance(outcome, Apply) and outcome.step.sha not in self.loaded:
                pipe.script_load(outcome.step.source)
                self.loaded.add(outcome.step.sha)
                loads += 1
            elif isinstance(outcome, Reject) and DEAD_LETTER.sha not in self.loaded:
                pipe.script_load(DEAD_LETTER.source)
                self.loaded.add(DEAD_LETTER.sha)
                loads += 1
        acks: dict[str, list[Delivery]] = {}  # plain acknowledgements: one XACK a stream
        # Who each command answers for, in order; a step's call answers with a list,
        # one result per message.
        sent: list[tuple[list[Delivery], bool]] = []
        for run in _runs(deliveries):
            step = run[0].outcome.step  # type: ignore[union-attr]
            pipe.evalsha(step.sha, *step.call_args(
                self.group, [(d.stream, d.entry_id, d.outcome) for d in run]))
            sent.append((run, True))
        for delivery in deliveries:
            outcome = delivery.outcome
            if isinstance(outcome, Reject):
                dead = DeadLetter.of(
                    delivery.stream, delivery.entry_id, delivery.fields, self.group,
                    outcome.reason, delivery.deliveries,
                )
                pipe.evalsha(
                    DEAD_LETTER.sha, 2, delivery.stream, keys.dead(delivery.stream),
                    self.group, delivery.entry_id, *pairs(dead.to_fields()),
                )
                sent.append(([delivery], False))
            elif not isinstance(outcome, Apply):
                acks.setdefault(delivery.stream, []).append(delivery)
        for stream, acked in acks.items():
            pipe.xack(stream, self.group, *(d.entry_id for d in acked))
            sent.append((acked, False))
        results = pipe.execute(raise_on_error=False)[loads:]
        answer: dict[int, Any] = {}
        for (owners, one_each), result in zip(sent, results, strict=True):
            if one_each and not (isinstance(result, list) and len(result) == len(owners)):
                one_each = False  # the call as a whole failed (NOSCRIPT, a dropped connection)
            for i, delivery in enumerate(owners):
                answer[id(delivery)] = result[i] if one_each else result
        return [answer[id(d)] for d in deliveries]


# A step's call carries at most this many messages, so that one script never
# holds Redis for long.
MAX_RUN = 100


def _runs(deliveries: list[Delivery]) -> list[list[Delivery]]:
    """The deliveries whose outcome is a step, in runs of consecutive messages
    with the same step: one call each, in the order they were read."""
    runs: list[list[Delivery]] = []
    for delivery in deliveries:
        outcome = delivery.outcome
        if not isinstance(outcome, Apply):
            continue
        last = runs[-1] if runs else None
        if last and last[0].outcome.step is outcome.step and len(last) < MAX_RUN:  # type: ignore[union-attr]
            last.append(delivery)
        else:
            runs.append([delivery])
    return runs
