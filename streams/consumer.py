"""The consumer runner: reads a group's streams, asks handlers what to do,
and applies their outcomes to Redis in batches.

One round trip reads a batch (XREADGROUP ... COUNT n BLOCK ms); one pipeline
applies it: for each message its atomic Lua step (state change + outcome
event + XACK), its dead-lettering, or its plain XACK. A handler that raises
leaves its message pending; the runner delivers it again after
``retry_after_s``, and once Redis has counted ``max_deliveries`` deliveries it
moves the message to ``<stream>.dead`` with the last error.

On start the runner creates its groups (MKSTREAM, from the start of each
stream, so orders placed before the first worker started are handled), then
finishes its own pending entries before it reads new ones. ``run(once=True)``
handles everything there is and returns: the deterministic mode for tests.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis

from streams import keys
from streams.commit import Committer
from streams.deadletter import DEAD_LETTER_TYPE, DeadLetter
from streams.delivery import Delivery, Middleware, reject
from streams.envelope import Envelope, MalformedEntry
from streams.events import EVENTS, stream_of
from streams.outcomes import Ack, Outcome

log = logging.getLogger(__name__)

Handler = Callable[[Any], Outcome]


class Consumer:
    def __init__(
        self,
        client: redis.Redis,
        group: str,
        handlers: Mapping[str, Handler],
        *,
        name: str | None = None,
        batch_size: int = 100,
        block_ms: int = 1000,
        max_deliveries: int = 5,
        retry_after_s: float = 1.0,
        middleware: Sequence[Middleware] = (),
    ) -> None:
        unknown = set(handlers) - set(EVENTS) - {DEAD_LETTER_TYPE}
        if unknown:
            raise ValueError(f"handlers for unknown event types: {sorted(unknown)}")
        self.client = client
        self.group = group
        self.handlers = dict(handlers)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.max_deliveries = max_deliveries
        self.retry_after_s = retry_after_s
        self.middleware = tuple(middleware)
        self.streams = self._streams_for(self.handlers)
        # A plain flag, not a threading.Event: stop() runs in signal handlers, and
        # Event.set() there deadlocks if the signal lands while the main thread
        # holds the Event's lock inside wait().
        self._stopping = False
        self._committer = Committer(client, group)
        self._failed: dict[tuple[str, str], str] = {}  # (stream, id) -> last error
        self._retry_at = 0.0

    @staticmethod
    def _streams_for(handlers: Iterable[str]) -> list[str]:
        streams: list[str] = []
        for event_type in handlers:
            if event_type == DEAD_LETTER_TYPE:
                wanted = [keys.dead(s) for s in keys.ALL_STREAMS]
            else:
                wanted = [stream_of(event_type)]
            streams += [s for s in wanted if s not in streams]
        return streams

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
        outage: _Outage | None = None
        prepared = False
        while not self.stopping:
            try:
                if not prepared:
                    self.ensure_groups()
                    self._committer.forget_scripts()
                    self.handle_pending()
                    prepared = True
                if outage:
                    outage.over()
                    outage = None
                if self._failed and (once or time.monotonic() >= self._retry_at):
                    self.handle_pending()
                handled = self.handle_new(block_ms=None if once else self._block_ms())
                if once and not handled and not self._failed:
                    return
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                outage = outage or _Outage(self.group, exc)
                self._pause(outage.next_delay())
                prepared = False
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                log.warning("%s: a stream or group vanished (%s); recreating", self.group, exc)
                prepared = False

    def _block_ms(self) -> int:
        if not self._failed:
            return self.block_ms
        until_retry = int((self._retry_at - time.monotonic()) * 1000)
        return max(1, min(self.block_ms, until_retry))

    # -- reading ---------------------------------------------------------------

    def handle_new(self, block_ms: int | None = None) -> int:
        """Read and handle one batch of new messages; return how many."""
        reply = self.client.xreadgroup(
            self.group, self.name, {s: ">" for s in self.streams},
            count=self.batch_size, block=block_ms,
        )
        batch = [
            Delivery(stream, entry_id, fields or {}, self.group)
            for stream, entries in _entries(reply)
            for entry_id, fields in entries
        ]
        self.handle(batch)
        return len(batch)

    def handle_pending(self) -> int:
        """One pass over this consumer's own pending entries (left by a crash or
        by a handler that raised); return how many were handled."""
        cursor = {s: "0" for s in self.streams}
        handled = 0
        seen: set[tuple[str, str]] = set()
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
                batch += [Delivery(stream, i, f or {}, self.group) for i, f in entries]
            if not batch:
                break
            self._count_deliveries(batch)
            self.handle(batch)
            handled += len(batch)
            seen.update((d.stream, d.entry_id) for d in batch)
        if not self.stopping:
            # What is no longer pending here was handled or claimed elsewhere.
            self._failed = {k: v for k, v in self._failed.items() if k in seen}
        self._retry_at = time.monotonic() + self.retry_after_s
        return handled

    def _count_deliveries(self, batch: list[Delivery]) -> None:
        """Fill in how many times Redis has delivered each re-read message."""
        by_stream: dict[str, list[Delivery]] = {}
        for delivery in batch:
            by_stream.setdefault(delivery.stream, []).append(delivery)
        pipe = self.client.pipeline(transaction=False)
        for stream, deliveries in by_stream.items():
            pipe.xpending_range(
                stream, self.group, deliveries[0].entry_id, deliveries[-1].entry_id,
                len(deliveries), consumername=self.name,
            )
        counts = {
            row["message_id"]: row["times_delivered"]
            for rows in pipe.execute()
            for row in rows
        }
        for delivery in batch:
            delivery.deliveries = counts.get(delivery.entry_id, 1)

    # -- handling --------------------------------------------------------------

    def handle(self, batch: list[Delivery]) -> None:
        """Decide every message of a batch, commit the outcomes, run the hooks."""
        if not batch:
            return
        for delivery in batch:
            self._decide(delivery)
        self._committer.commit(batch)
        for delivery in batch:
            key = (delivery.stream, delivery.entry_id)
            if delivery.error is None:
                self._failed.pop(key, None)
            else:
                if not self._failed:
                    self._retry_at = time.monotonic() + self.retry_after_s
                self._failed[key] = f"{type(delivery.error).__name__}: {delivery.error}"
            for hook in reversed(delivery.hooks):
                try:
                    hook.send(delivery)
                except StopIteration:
                    pass
                except Exception:  # the outcome is committed; a hook must not stop the worker
                    log.exception("%s: middleware failed after %s", self.group, delivery.entry_id)

    def _decide(self, delivery: Delivery) -> None:
        for middleware in self.middleware:
            hook = middleware(delivery)
            next(hook)
            delivery.hooks.append(hook)
        if delivery.deliveries > self.max_deliveries:
            last = self._failed.get((delivery.stream, delivery.entry_id), "no error recorded")
            delivery.outcome = reject(
                delivery, f"gave up after {delivery.deliveries - 1} deliveries; last error: {last}"
            )
            return
        if not delivery.fields:
            delivery.outcome = Ack("entry was deleted before it was handled; acknowledged")
            return
        try:
            if keys.is_dead(delivery.stream):
                delivery.event = DeadLetter.parse(delivery.fields)
                handler = self.handlers[DEAD_LETTER_TYPE]
            else:
                delivery.event = event = Envelope.parse(delivery.fields)
                if stream_of(event.type) != delivery.stream:
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


class _Outage:
    """Backs off while Redis is unreachable, logging one line when it starts
    and one when it ends, rather than a traceback per poll."""

    def __init__(self, group: str, exc: Exception) -> None:
        self.group = group
        self.started = time.monotonic()
        self.delay = 0.1
        log.warning("%s: redis unreachable (%s); retrying with backoff", group, exc)

    def next_delay(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, 2.0)
        return delay

    def over(self) -> None:
        log.warning(
            "%s: redis is back after %.1fs; resuming", self.group, time.monotonic() - self.started
        )
