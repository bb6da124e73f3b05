"""The consumer runner: reads a group's streams, asks handlers what to do,
and applies their outcomes to Redis in batches.

One round trip reads a batch (XREADGROUP ... COUNT n BLOCK ms; on a cluster,
a round trip per master: ``streams.reading``); one pipeline applies it: for
each message its atomic Lua step (state change + outcome event + XACK), its
dead-lettering, or its plain XACK.

Recovery, all of it counted by Redis rather than in memory:

- On start the runner checks that the data was written with its partition
  count, creates its groups (MKSTREAM, from the start of each
  stream, so orders placed before the first worker started are handled),
  then finishes its own pending entries before it reads new ones.
- A handler that raises leaves its message pending and its error in Redis
  (``Topology.delivery_error``). The runner claims it back after a backoff that
  doubles with each delivery (``retry_after_s``, 2x, 4x, ... up to the claim
  idle time). Once Redis has counted more than ``max_deliveries`` deliveries
  the message moves to ``<stream>.dead`` with the last error.
- Every ``claim_idle_ms / 2`` the runner claims (XAUTOCLAIM) entries that any
  consumer of its group, perhaps one killed with ``kill -9``, has left pending
  for longer than ``claim_idle_ms``. Handlers are idempotent, so an entry
  claimed from a consumer that was merely slow changes nothing twice.
- In the same pass it trims its streams to ``retention_s`` of history, never
  past an entry some group has not handled (``streams.retention``).
- A node that cannot be reached, or (with replicas to wait for) whose
  replicas did not confirm what was read from it or written there, closes a
  gate (``streams.gates``): what came from it or waits on it is kept in
  memory, not handled and not counted as a failed delivery, and claimed
  back once the node (or, after a failover, its successor) shows it holds
  it. The other nodes go on meanwhile.

``run(once=True)`` handles everything there is, retrying at once rather than
after a backoff, and returns: the deterministic mode for tests.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis

from streams import recovery, retention, tracing
from streams.commit import Committer
from streams.deadletter import DEAD_LETTER_TYPE, DeadLetter
from streams.delivery import Delivery, Middleware, reject
from streams.envelope import Envelope, MalformedEntry
from streams.gates import Gates, describe
from streams.nodes import TRANSIENT, Nodes, is_transient
from streams.outcomes import Ack, Outcome
from streams.reading import Read, Reader
from streams.retries import Retries
from streams.topology import Topology, check_partitions, is_dead

log = logging.getLogger(__name__)

Handler = Callable[[Any], Outcome]


class Consumer:
    """Reads every partition's streams of one group: any number of replicas
    share the group, each reading every partition; Redis hands each entry to
    one of them, and a dead replica's entries are claimed by the others."""

    def __init__(
        self,
        client: Any,
        topology: Topology,
        group: str,
        handlers: Mapping[str, Handler],
        *,
        name: str | None = None,
        batch_size: int = 100,
        block_ms: int = 1000,
        max_deliveries: int = 5,
        retry_after_s: float = 1.0,
        claim_idle_ms: int = 10_000,
        retention_s: float | None = None,
        middleware: Sequence[Middleware] = (),
        wait_replicas: int = 0,
        wait_ms: int = 1000,
        poll_ms: int = 50,
    ) -> None:
        unknown = {t for t in handlers if t != DEAD_LETTER_TYPE and topology.event(t) is None}
        if unknown:
            raise ValueError(f"handlers for unknown event types: {sorted(unknown)}")
        self.client = client
        self.topology = topology
        self.group = group
        self.handlers = dict(handlers)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.max_deliveries = max_deliveries
        self.retry_after_s = retry_after_s
        self.claim_idle_ms = claim_idle_ms
        self.retention_s = retention_s
        self.middleware = tuple(middleware)
        self.streams = self._streams_for(self.handlers)
        # Each stream as (the stream, its partition's tag), worked out once.
        self._split = {stream: topology.split(stream) for stream in self.streams}
        # A plain flag, not a threading.Event: stop() runs in signal handlers, and
        # Event.set() there deadlocks if the signal lands while the main thread
        # holds the Event's lock inside wait().
        self._stopping = False
        self.nodes = Nodes(client, prefix=topology.name, replicas=wait_replicas, wait_ms=wait_ms)
        self.committer = Committer(self.nodes, topology, group)
        self.reader = Reader(self.nodes, topology, group, self.name, batch_size, poll_ms)
        self.gates = Gates(self.nodes, group)
        self._label = topology.subject.removesuffix("_id")
        self.retries = Retries(self.gates)
        self._maintain_at = 0.0

    def _streams_for(self, handlers: Iterable[str]) -> list[str]:
        """Every partition's stream of each event type handled (the dead-letter
        streams of them all for a dead-letter handler)."""
        streams: list[str] = []
        for event_type in handlers:
            if event_type == DEAD_LETTER_TYPE:
                wanted = self.topology.dead_streams()
            else:
                wanted = self.topology.partitioned(self.topology.stream_of(event_type))
            streams += [s for s in wanted if s not in streams]
        return streams

    def _delivery(self, stream: str, entry_id: str, fields: dict[str, str] | None) -> Delivery:
        fields = fields or {}
        return Delivery(stream, entry_id, fields, self.group,
                        fields.get(self.topology.subject) or "?", self._label)

    # -- lifecycle -----------------------------------------------------------

    def stop(self) -> None:
        """Ask the runner to stop after the batch in hand (safe from a signal handler)."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def _pause(self, seconds: float) -> None:
        """Wait up to ``seconds``, returning early once stop() is called."""
        deadline = time.monotonic() + seconds
        while not self._stopping and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.05))

    def ensure_groups(self) -> None:
        """Create the group on every stream, idempotently, from the beginning."""
        commands = [("XGROUP", "CREATE", s, self.group, "0", "MKSTREAM") for s in self.streams]
        for answer in self.nodes.execute(commands):
            if isinstance(answer, BaseException) and "BUSYGROUP" not in str(answer):
                raise answer

    def run(self, once: bool = False) -> None:
        """Handle messages until ``stop()``; with ``once``, until none is left
        that can be handled now."""
        outage: recovery.Outage | None = None
        prepared = False
        while not self.stopping:
            try:
                if not prepared:
                    check_partitions(self.client, self.topology)
                    self.ensure_groups()
                    self.nodes.forget_scripts()
                    self.handle_pending()
                    prepared = True
                if outage:
                    outage.over()
                    outage = None
                if self.gates:
                    self.gates.try_due(now=None if once else time.monotonic())
                if once or time.monotonic() >= self._maintain_at:
                    self.maintain()
                if self.retries:
                    self.retry_due(now=None if once else time.monotonic())
                handled = self.handle_new(block_ms=None if once else self._block_ms())
                if once and not handled and not self.retries.ready():
                    return
            except TRANSIENT as exc:
                outage = outage or recovery.Outage(self.group, exc)
                self._pause(outage.next_delay())
                prepared = False
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("%s: a stream or group vanished (%s); recreating", self.group, exc)
                prepared = False

    def _block_ms(self) -> int:
        """Block for new messages, but not past the next retry, gate or maintenance."""
        wake = min(self._maintain_at, self.gates.next_try(), self.retries.next_at())
        until = int((wake - time.monotonic()) * 1000)
        return max(1, min(self.block_ms, until))

    def maintain(self) -> None:
        """Claim what other consumers left idle too long, forget consumers long
        gone, trim the streams. A node that does not answer is skipped this time."""
        for task in (self.claim_idle, self.forget_consumers, self._trim):
            try:
                task()
            except TRANSIENT as exc:
                log.debug("%s: %s skipped this time: %s", self.group, task.__name__, exc)
        self._maintain_at = time.monotonic() + max(0.1, self.claim_idle_ms / 2000)

    def _trim(self) -> None:
        if self.retention_s is None:
            return
        live = [s for s in self.streams if not is_dead(s) and not self.gates.waits(s)]
        trimmed = retention.trim(self.client, self.topology, live, self.retention_s)
        for stream, removed in trimmed.items():
            if removed:
                log.debug("%s: trimmed %d entries from %s", self.group, removed, stream)

    def forget_consumers(self, after_s: float = recovery.FORGET_CONSUMERS_AFTER_S) -> list[str]:
        """Remove consumers of this group that hold nothing and have been idle
        for ``after_s``; return their names."""
        gone = recovery.forget_consumers(self.nodes, self.group, self.streams, self.name, after_s)
        if gone:
            log.info("%s: forgot consumers idle over %.0fs with nothing pending: %s",
                     self.group, after_s, ", ".join(gone))
        return gone

    def backoff_s(self, deliveries: int) -> float:
        """How long a message delivered ``deliveries`` times waits before the next try."""
        return recovery.backoff_s(deliveries, self.retry_after_s, self.claim_idle_ms / 1000)

    # -- reading ---------------------------------------------------------------

    def handle_new(self, block_ms: int | None = None) -> int:
        """Read and handle one batch of new messages; return how many."""
        return self._take(self.reader.new(self.streams, self.gates, block_ms))

    def handle_pending(self) -> int:
        """One pass over this consumer's own pending entries, left by a crash;
        return how many were handled."""
        return sum(self._take(read, count=True)
                   for read in self.reader.own_pending(self.streams, lambda: self.stopping))

    def claim_idle(self) -> int:
        """XAUTOCLAIM entries of this group idle longer than ``claim_idle_ms``
        (left by a dead or stuck consumer, or our own failures waiting for a
        retry), handle them, and return how many."""
        handled = 0
        streams = [s for s in self.streams if not self.gates.waits(s)]
        for read in self.reader.claim(streams, self.claim_idle_ms, lambda: self.stopping):
            if read.entries:
                where = ", ".join(sorted({s for s, _, _ in read.entries}))
                log.warning("%s: claimed %d message(s) of %s pending over %dms (a consumer "
                            "died, is stuck, or waits to retry)",
                            self.group, len(read.entries), where, self.claim_idle_ms)
            handled += self._take(read, count=True)
        return handled

    def retry_due(self, now: float | None = None) -> int:
        """Claim back and handle our messages whose backoff is over (all of them
        when ``now`` is None), and those whose gate opened; return how many."""
        due = self.retries.due(now)
        # The idle condition makes the claim fail if another consumer took the
        # message meanwhile (its claim reset the idle time).
        return self._take(self.reader.reclaim(due), count=True) if due else 0

    def _take(self, read: Read, count: bool = False) -> int:
        """Handle what a read brought; what waits on a node waits behind its gate."""
        for key, error in read.failed:
            self.gates.close(key, error)
        for stream, entry_id, why in read.waiting:
            self.retries.behind(stream, entry_id, getattr(why, "key", "") or stream, why)
        batch = [self._delivery(stream, i, f) for stream, i, f in read.entries]
        if batch and count:
            counts = self.reader.deliveries([(d.stream, d.entry_id) for d in batch])
            for delivery in batch:
                delivery.deliveries = counts[(delivery.stream, delivery.entry_id)]
        self.handle(batch)
        return len(batch)

    # -- handling --------------------------------------------------------------

    def handle(self, batch: list[Delivery]) -> None:
        """Decide every message of a batch, commit the outcomes, run the hooks."""
        if not batch:
            return
        errors = recovery.last_errors(
            self.nodes, self.topology, self.group,
            [d for d in batch if d.deliveries > self.max_deliveries],
        )
        for delivery in batch:
            self._decide(delivery, errors)
        decided = time.perf_counter()
        self.committer.commit(batch)
        committed = time.perf_counter() - decided
        failed = []
        for delivery in batch:
            delivery.commit_s = committed
            if delivery.error is None:
                continue
            if is_transient(delivery.error):  # not the handler's fault: wait for its node
                key = getattr(delivery.error, "key", "") or delivery.stream
                self.retries.behind(delivery.stream, delivery.entry_id, key, delivery.error)
                delivery.waits = describe(getattr(delivery.error, "node", "?"), delivery.error)
            else:
                failed.append(delivery)
        if failed:
            self._remember_failures(failed)
        for delivery in batch:
            for hook in reversed(delivery.hooks):
                try:
                    hook.send(delivery)
                except StopIteration:
                    pass
                except Exception:  # the outcome is committed; a hook must not stop the worker
                    log.exception("%s: middleware failed after %s", self.group, delivery.entry_id)
            if delivery.span is not None and delivery.span.recording is not None:
                delivery.span.end({"outcome": type(delivery.outcome).__name__.lower()},
                                  delivery.error)

    def _remember_failures(self, failed: list[Delivery]) -> None:
        """Keep each error in Redis, for whichever consumer gives up on the
        message, and schedule our own retry after the backoff."""
        for delivery in failed:
            wait = delivery.retry_in_s = self.backoff_s(delivery.deliveries)
            self.retries.after(delivery.stream, delivery.entry_id, wait)
        try:
            recovery.record_errors(self.nodes, self.topology, self.group, failed)
        except redis.RedisError as exc:  # the message stays pending and is retried anyway
            log.warning("%s: could not record %d error(s): %s", self.group, len(failed), exc)

    def _trace(self, delivery: Delivery) -> None:
        """This hop of the message's trace: after the hop that wrote it (its
        ``traceparent``; a dead letter's is its original's)."""
        fields = delivery.fields
        parent = fields.get("traceparent")
        if parent is None and "original" in fields and is_dead(delivery.stream):
            try:
                parent = json.loads(fields["original"]).get("traceparent")
            except (ValueError, AttributeError):
                parent = None
        attributes = {}
        if tracing.enabled():
            attributes = {"messaging.system": "redis", "messaging.destination.name":
                          delivery.stream, "messaging.consumer.group.name": self.group,
                          "messaging.message.id": delivery.entry_id,
                          f"{self._label}.id": delivery.subject,
                          "messaging.delivery.count": delivery.deliveries}
        delivery.span = tracing.start(f"{self.group} {fields.get('type', '?')}",
                                      tracing.parse(parent), attributes)

    def _decide(self, delivery: Delivery, errors: Mapping[tuple[str, str], str]) -> None:
        self._trace(delivery)
        for middleware in self.middleware:
            hook = middleware(delivery)
            next(hook)
            delivery.hooks.append(hook)
        if delivery.deliveries > self.max_deliveries:
            last = errors.get((delivery.stream, delivery.entry_id), "no error recorded")
            delivery.outcome = reject(
                delivery, f"gave up after {delivery.deliveries - 1} deliveries; last error: {last}"
            )
            return
        if not delivery.fields:
            delivery.outcome = Ack("entry was deleted before it was handled; acknowledged")
            return
        try:
            if is_dead(delivery.stream):
                delivery.event = DeadLetter.parse(delivery.fields, self.topology.subject)
                handler = self.handlers[DEAD_LETTER_TYPE]
            else:
                base, tag = self._split.get(delivery.stream) or self.topology.split(
                    delivery.stream)
                delivery.event = event = Envelope.parse(delivery.fields, self.topology, tag)
                if self.topology.stream_of(event.type) != base:
                    raise MalformedEntry(
                        f"event type {event.type!r} does not belong on stream {delivery.stream!r}"
                    )
                handler = self.handlers.get(event.type)  # type: ignore[assignment]
                if handler is None:
                    raise MalformedEntry(f"group {self.group!r} has no handler for {event.type!r}")
        except MalformedEntry as exc:
            delivery.outcome = reject(delivery, str(exc))
            return
        started = time.perf_counter()
        try:
            with tracing.within(delivery.span.context):  # type: ignore[union-attr]
                delivery.outcome = handler(delivery.event)
        except Exception as exc:  # retried, then dead-lettered; logged by middleware
            delivery.error = exc
        delivery.handler_s = time.perf_counter() - started
