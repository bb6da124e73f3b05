"""Applying a batch's outcomes to Redis, a round trip at a time (a round trip
per node on a cluster: ``streams.nodes``).

First the sub-steps of every ``Chain`` of the batch, together, as often as
the chains go on; then one pipeline with each message's final outcome: its
Lua step (which acknowledges the message itself) or its dead-lettering
script; messages that only need acknowledging share one XACK per stream.
Scripts are loaded where they are used, in the same round trip. A step that
answers ``dead_letter`` is dead-lettered in a second pipeline.

With replicas to wait for, a chain goes on only once a replica of every node
its last round wrote to holds what was written: a sub-step in another slot
(another master) is never built on one that a failover could take back. A
round that no replica confirmed leaves the message's error ``Unconfirmed``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from streams import tracing
from streams.deadletter import DeadLetter
from streams.delivery import Delivery, reject
from streams.nodes import Nodes
from streams.outcomes import Apply, Chain, Reject
from streams.scripts import DEAD_LETTER, Script, pairs
from streams.topology import Topology, dead

# The most rounds of sub-steps one message may chain (a runaway chain is an error).
MAX_ROUNDS = 64


class Committer:
    def __init__(self, nodes: Nodes, topology: Topology, group: str) -> None:
        self.nodes = nodes
        self.topology = topology
        self.group = group
        # Called before each round trip with its number (0, 1, ...): a test
        # stops the worker there, as a kill -9 would, to check every point
        # between sub-steps.
        self.before_round: Callable[[int], None] | None = None

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
                if isinstance(result, Exception):
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
                    with tracing.within(delivery.span.context if delivery.span else None):
                        delivery.outcome = delivery.outcome.then(got)  # type: ignore[union-attr]
                except Exception as exc:  # the handler's own bug: retried, then dead-lettered
                    delivery.error = exc
        return rounds

    def _run(self, calls: Sequence[tuple[Script, Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """EVALSHA each call, in one round trip per node; confirmed by a replica
        of each node when there are replicas to wait for."""
        return self.nodes.execute([("EVALSHA", s, len(k), *k, *a) for s, k, a in calls],
                                  fence=True)

    def _execute(self, deliveries: list[Delivery]) -> list[Any]:
        subject = self.topology.subject
        commands: list[tuple[Any, ...]] = []
        acks: dict[str, list[Delivery]] = {}  # plain acknowledgements: one XACK a stream
        sent: list[list[Delivery]] = []  # who each command answers for, in order
        for delivery in deliveries:
            outcome = delivery.outcome
            if isinstance(outcome, Apply):
                commands.append((
                    "EVALSHA", outcome.step.script(subject), 1 + len(outcome.keys),
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
                    "EVALSHA", DEAD_LETTER, 2, delivery.stream, dead(delivery.stream),
                    self.group, delivery.entry_id, *pairs(letter.to_fields(subject)),
                ))
                sent.append([delivery])
            else:
                acks.setdefault(delivery.stream, []).append(delivery)
        for stream, acked in acks.items():
            commands.append(("XACK", stream, self.group, *(d.entry_id for d in acked)))
            sent.append(acked)
        results = self.nodes.execute(commands)
        answer = {id(d): result for owners, result in zip(sent, results, strict=True)
                  for d in owners}
        return [answer[id(d)] for d in deliveries]
