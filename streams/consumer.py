"""The consumer runner: reads a group's streams, asks handlers what to do,
and applies their outcomes to Redis in batches.

One round trip reads a batch (XREADGROUP ... COUNT n BLOCK ms); one pipeline
applies it: for each message its atomic Lua step (state change + outcome
event + XACK), its dead-lettering, or its plain XACK.

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

``run(once=True)`` handles everything there is, retrying at once rather than
after a backoff, and returns: the deterministic mode for tests.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis

from streams import recovery, retention
from streams.commit import Committer
from streams.deadletter import DEAD_LETTER_TYPE, DeadLetter
from streams.delivery import Delivery, Middleware, reject
from streams.envelope import Envelope, MalformedEntry
from streams.outcomes import Ack, Outcome
from streams.topology import Topology, check_partitions, is_dead

log = logging.getLogger(__name__)

Handler = Callable[[Any], Outcome]


class Consumer:
    """Reads every partition's streams of one group: any number of replicas
    share the group, each reading every partition; Redis hands each entry to
    one of them, and a dead replica's entries are claimed by the others."""

    def __init__(
        self,
        client: redis.Redis,
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
        self.committer = Committer(client, topology, group)
        self._label = topology.subject.removesuffix("_id")
        # Messages of ours whose handler raised: (stream, id) -> (when to retry,
        # the idle time the retry waits for). Lost on a crash, which is fine:
        # the entries stay pending and XAUTOCLAIM finds them.
        self._retries: dict[tuple[str, str], tuple[float, int]] = {}
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
        for stream in self.streams:
            try:
                self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def run(self, once: bool = False) -> None:
        """Handle messages until ``stop()``; with ``once``, until none is left."""
        outage: recovery.Outage | None = None
        prepared = False
        while not self.stopping:
            try:
                if not prepared:
                    check_partitions(self.client, self.topology)
                    self.ensure_groups()
                    self.committer.forget_scripts()
                    self.handle_pending()
                    prepared = True
                if outage:
                    outage.over()
                    outage = None
                if once or time.monotonic() >= self._maintain_at:
                    self.maintain()
                if self._retries:
                    self.retry_due(now=None if once else time.monotonic())
                handled = self.handle_new(block_ms=None if once else self._block_ms())
                if once and not handled and not self._retries:
                    return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                outage = outage or recovery.Outage(self.group, exc)
                self._pause(outage.next_delay())
                prepared = False
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("%s: a stream or group vanished (%s); recreating", self.group, exc)
                prepared = False

    def _block_ms(self) -> int:
        """Block for new messages, but not past the next retry or maintenance."""
        wake = min([self._maintain_at, *(at for at, _ in self._retries.values())])
        until = int((wake - time.monotonic()) * 1000)
        return max(1, min(self.block_ms, until))

    def maintain(self) -> None:
        """Claim what other consumers left idle too long, forget consumers long
        gone, trim the streams."""
        self.claim_idle()
        self.forget_consumers()
        if self.retention_s is not None:
            live = [s for s in self.streams if not is_dead(s)]
            trimmed = retention.trim(self.client, self.topology, live, self.retention_s)
            for stream, removed in trimmed.items():
                if removed:
                    log.debug("%s: trimmed %d entries from %s", self.group, removed, stream)
        self._maintain_at = time.monotonic() + max(0.1, self.claim_idle_ms / 2000)

    def forget_consumers(self, after_s: float = recovery.FORGET_CONSUMERS_AFTER_S) -> list[str]:
        """Remove consumers of this group that hold nothing and have been idle
        for ``after_s``; return their names."""
        gone = recovery.forget_consumers(self.client, self.group, self.streams, self.name, after_s)
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
        reply = self.client.xreadgroup(
            self.group, self.name, {s: ">" for s in self.streams},
            count=self.batch_size, block=block_ms,
        )
        batch = [
            self._delivery(stream, entry_id, fields)
            for stream, entries in _entries(reply)
            for entry_id, fields in entries
        ]
        self.handle(batch)
        return len(batch)

    def handle_pending(self) -> int:
        """One pass over this consumer's own pending entries, left by a crash;
        return how many were handled."""
        cursor = {s: "0" for s in self.streams}
        handled = 0
        while cursor and not self.stopping:
            reply = self.client.xreadgroup(
                self.group, self.name, cursor, count=self.batch_size
            )
            batch: list[Delivery] = []
            for stream, entries in _entries(reply):
                if not entries:
                    cursor.pop(stream, None)
                    continue
                cursor[stream] = entries[-1][0]
                batch += [self._delivery(stream, i, f) for i, f in entries]
            if not batch:
                break
            recovery.count_deliveries(self.client, self.group, batch)
            self.handle(batch)
            handled += len(batch)
        return handled

    def claim_idle(self) -> int:
        """XAUTOCLAIM entries of this group idle longer than ``claim_idle_ms``
        (left by a dead or stuck consumer, or our own failures waiting for a
        retry), handle them, and return how many."""
        handled = 0
        for stream in self.streams:
            start = "0-0"
            while not self.stopping:
                next_start, entries, *_deleted = self.client.xautoclaim(
                    stream, self.group, self.name, self.claim_idle_ms, start,
                    count=self.batch_size,
                )
                batch = [self._delivery(stream, i, f) for i, f in entries]
                if batch:
                    log.warning("%s: claimed %d message(s) of %s pending over %dms (a consumer "
                                "died, is stuck, or waits to retry)",
                                self.group, len(batch), stream, self.claim_idle_ms)
                    recovery.count_deliveries(self.client, self.group, batch)
                    self.handle(batch)
                    handled += len(batch)
                if next_start == "0-0" or not batch:
                    break
                start = next_start
        return handled

    def retry_due(self, now: float | None = None) -> int:
        """Claim back and handle our failed messages whose backoff is over (all
        of them when ``now`` is None); return how many."""
        due = [
            (stream, entry_id, min_idle)
            for (stream, entry_id), (at, min_idle) in self._retries.items()
            if now is None or at <= now
        ]
        if not due:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for stream, entry_id, min_idle in due:
            # The idle condition makes the claim fail if another consumer took
            # the message meanwhile (its claim reset the idle time).
            pipe.xclaim(stream, self.group, self.name, 0 if now is None else min_idle,
                        [entry_id])
        batch: list[Delivery] = []
        for (stream, entry_id, _), claimed in zip(due, pipe.execute(), strict=True):
            del self._retries[(stream, entry_id)]
            batch += [self._delivery(stream, i, f) for i, f in claimed]
        if batch:
            recovery.count_deliveries(self.client, self.group, batch)
            self.handle(batch)
        return len(batch)

    # -- handling --------------------------------------------------------------

    def handle(self, batch: list[Delivery]) -> None:
        """Decide every message of a batch, commit the outcomes, run the hooks."""
        if not batch:
            return
        errors = recovery.last_errors(
            self.client, self.topology, self.group,
            [d for d in batch if d.deliveries > self.max_deliveries],
        )
        for delivery in batch:
            self._decide(delivery, errors)
        self.committer.commit(batch)
        failed = [d for d in batch if d.error is not None]
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

    def _remember_failures(self, failed: list[Delivery]) -> None:
        """Keep each error in Redis, for whichever consumer gives up on the
        message, and schedule our own retry after the backoff."""
        now = time.monotonic()
        for delivery in failed:
            wait = delivery.retry_in_s = self.backoff_s(delivery.deliveries)
            self._retries[(delivery.stream, delivery.entry_id)] = (now + wait, int(wait * 1000))
        try:
            recovery.record_errors(self.client, self.topology, self.group, failed)
        except redis.RedisError as exc:  # the message stays pending and is retried anyway
            log.warning("%s: could not record %d error(s): %s", self.group, len(failed), exc)

    def _decide(self, delivery: Delivery, errors: Mapping[tuple[str, str], str]) -> None:
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
        try:
            delivery.outcome = handler(delivery.event)
        except Exception as exc:  # retried, then dead-lettered; logged by middleware
            delivery.error = exc


def _entries(reply: Any) -> list[tuple[str, list]]:
    """XREADGROUP's RESP2 reply as (stream, entries) pairs."""
    return [(stream, entries) for stream, entries in reply or []]
