"""Applying a batch's outcomes to Redis, a round trip at a time.

First the sub-steps of every ``Chain`` of the batch, together, as often as
the chains go on; then one pipeline with each message's final outcome: its
Lua step (which acknowledges the message itself) or its dead-lettering
script; messages that only need acknowledging share one XACK per stream.
Scripts are loaded in the same round trip the first time they are used and
again if the server lost them (NOSCRIPT, after a restart). A step that
answers ``dead_letter`` is dead-lettered in a second pipeline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import redis

from streams.connection import execute_all
from streams.deadletter import DeadLetter
from streams.delivery import Delivery, reject
from streams.outcomes import Apply, Chain, Reject
from streams.scripts import DEAD_LETTER, Script, pairs
from streams.topology import Topology, dead

# The most rounds of sub-steps one message may chain (a runaway chain is an error).
MAX_ROUNDS = 64


class Committer:
    def __init__(self, client: redis.Redis, topology: Topology, group: str) -> None:
        self.client = client
        self.topology = topology
        self.group = group
        self.loaded: set[str] = set()  # script shas known to be on the server
        # Called before each round trip with its number (0, 1, ...): a test
        # stops the worker there, as a kill -9 would, to check every point
        # between sub-steps.
        self.before_round: Callable[[int], None] | None = None

    def forget_scripts(self) -> None:
        """After a reconnect the server may be a new one, without our scripts."""
        self.loaded.clear()

    def commit(self, batch: list[Delivery]) -> None:
        """Apply the outcome of every decided message; a command that fails
        leaves its error on the delivery, and its message pending."""
        rounds = self._chains(batch)
        todo = [d for d in batch if d.error is None and d.outcome is not None]
        for attempt in range(2):
            if not todo:
                return
            if self.before_round:
                self.before_round(rounds + attempt)
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

    def _chains(self, batch: list[Delivery]) -> int:
        """Run the sub-steps of every chain, a round trip per round, until each
        message has its final outcome; return how many rounds it took."""
        rounds = 0
        while chains := [d for d in batch if d.error is None and isinstance(d.outcome, Chain)]:
            if rounds == MAX_ROUNDS:
                for delivery in chains:
                    delivery.error = RuntimeError(f"chained more than {MAX_ROUNDS} rounds")
                break
            if self.before_round:
                self.before_round(rounds)
            rounds += 1
            calls = [(d, call) for d in chains for call in d.outcome.calls]  # type: ignore[union-attr]
            results = self._run([(c.script, c.keys, c.args) for _, c in calls])
            answers: dict[int, list[Any]] = {id(d): [] for d in chains}
            for (delivery, _), result in zip(calls, results, strict=True):
                answers[id(delivery)].append(result)
            for delivery in chains:
                got = answers[id(delivery)]
                failed = next((r for r in got if isinstance(r, Exception)), None)
                if failed is not None:
                    delivery.error = failed
                    continue
                try:
                    delivery.outcome = delivery.outcome.then(got)  # type: ignore[union-attr]
                except Exception as exc:  # the handler's own bug: retried, then dead-lettered
                    delivery.error = exc
        return rounds

    def _run(self, calls: Sequence[tuple[Script, Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """EVALSHA each call, loading what the server lacks; one round trip
        (two if the server lost its scripts)."""
        for _attempt in range(2):
            loads = self._loads(script for script, _, _ in calls)
            commands = [("EVALSHA", s.sha, len(k), *k, *a) for s, k, a in calls]
            results = execute_all(self.client, loads + commands)[len(loads):]
            if not any(isinstance(r, redis.exceptions.NoScriptError) for r in results):
                return results
            self.loaded.clear()
        return results

    def _loads(self, scripts: Any) -> list[tuple[Any, ...]]:
        loads: list[tuple[Any, ...]] = []
        for script in scripts:
            if script.sha not in self.loaded:
                loads.append(("SCRIPT", "LOAD", script.source))
                self.loaded.add(script.sha)
        return loads

    def _execute(self, deliveries: list[Delivery]) -> list[Any]:
        subject = self.topology.subject
        scripts = [
            d.outcome.step.script(subject) if isinstance(d.outcome, Apply) else DEAD_LETTER
            for d in deliveries if isinstance(d.outcome, Apply | Reject)
        ]
        commands = self._loads(scripts)
        loads = len(commands)
        acks: dict[str, list[Delivery]] = {}  # plain acknowledgements: one XACK a stream
        sent: list[list[Delivery]] = []  # who each command answers for, in order
        for delivery in deliveries:
            outcome = delivery.outcome
            if isinstance(outcome, Apply):
                commands.append((
                    "EVALSHA", outcome.step.script(subject).sha, 1 + len(outcome.keys),
                    delivery.stream, *outcome.keys, self.group, delivery.entry_id,
                    *(outcome.header.as_args() if outcome.header else ()), *outcome.args,
                ))
                sent.append([delivery])
            elif isinstance(outcome, Reject):
                letter = DeadLetter.of(
                    delivery.stream, delivery.entry_id, delivery.fields, self.group,
                    outcome.reason, delivery.deliveries, subject,
                )
                commands.append((
                    "EVALSHA", DEAD_LETTER.sha, 2, delivery.stream, dead(delivery.stream),
                    self.group, delivery.entry_id, *pairs(letter.to_fields(subject)),
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
