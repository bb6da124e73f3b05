"""Applying a batch's outcomes to Redis, in one pipeline.

Each message's outcome becomes one command: its Lua step (which acknowledges
the message itself) or its dead-lettering script; messages that only need
acknowledging share one XACK per stream. Scripts are loaded in the same
pipeline the first time they are used and again if the server lost them
(NOSCRIPT, after a restart). A step that answers ``dead_letter`` is
dead-lettered in a second pipeline.
"""

from __future__ import annotations

from typing import Any

import redis

from streams import keys
from streams.connection import execute_all
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
        commands: list[tuple[Any, ...]] = []
        for delivery in deliveries:
            outcome = delivery.outcome
            if isinstance(outcome, Apply) and outcome.step.sha not in self.loaded:
                commands.append(("SCRIPT", "LOAD", outcome.step.source))
                self.loaded.add(outcome.step.sha)
            elif isinstance(outcome, Reject) and DEAD_LETTER.sha not in self.loaded:
                commands.append(("SCRIPT", "LOAD", DEAD_LETTER.source))
                self.loaded.add(DEAD_LETTER.sha)
        loads = len(commands)
        acks: dict[str, list[Delivery]] = {}  # plain acknowledgements: one XACK a stream
        sent: list[list[Delivery]] = []  # who each command answers for, in order
        for delivery in deliveries:
            outcome = delivery.outcome
            if isinstance(outcome, Apply):
                commands.append((
                    "EVALSHA", outcome.step.sha, 1 + len(outcome.keys), delivery.stream,
                    *outcome.keys, self.group, delivery.entry_id,
                    *(outcome.header.as_args() if outcome.header else ()), *outcome.args,
                ))
                sent.append([delivery])
            elif isinstance(outcome, Reject):
                dead = DeadLetter.of(
                    delivery.stream, delivery.entry_id, delivery.fields, self.group,
                    outcome.reason, delivery.deliveries,
                )
                commands.append((
                    "EVALSHA", DEAD_LETTER.sha, 2, delivery.stream, keys.dead(delivery.stream),
                    self.group, delivery.entry_id, *pairs(dead.to_fields()),
                ))
                sent.append([delivery])
            else:
                acks.setdefault(delivery.stream, []).append(delivery)
        for stream, acked in acks.items():
            commands.append(("XACK", stream, self.group, *(d.entry_id for d in acked)))
            sent.append(acked)
        results = execute_all(self.client, commands)[loads:]
        answer = {id(d): result for owners, result in zip(sent, results, strict=True)
                  for d in owners}
        return [answer[id(d)] for d in deliveries]
