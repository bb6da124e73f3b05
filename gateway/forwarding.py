"""Forwarding processors: each store's messages delivered to its endpoint, at
least once, in order per key.

A store is a stream per partition (``gateway.webhooks{p3}``: an order's
messages are all in its partition's). One processor forwards one stream,
strictly in order: the next message waits until the one before it was
delivered or parked. Only one gateway forwards a stream at a time (a lease
in Redis, renewed while it runs); another gateway of the same configuration
waits, and takes over within ``LEASE_MS`` of the first one's death.

Delivery: the stored body, byte for byte, with ``Idempotency-Key: <message
id>`` (the event's id: the same on every attempt, after a crash, and after
a replay), ``X-Shop-Attempt`` and, with ``sign``, an HMAC-SHA256 signature
(``gateway.signing``). A 2xx delivers it. An endpoint that does not answer
is suspended (``gateway.endpoints``) and tried again when its suspension
ends; an answer that is not a 2xx is tried again after the store's back-off.
Attempts are counted in Redis (``keys.delivery_attempts``), so a restart
goes on counting; after ``max_attempts`` the message is parked in the
store's dead letters (``gateway.webhooks{p3}.dead``), which ``shopctl dead``,
``/ops/dead-letters`` and the ops MCP server list and replay.

The messages are read through a consumer group (``forwarder``) under one
consumer name, so a processor that starts (after a crash, or taking over)
finds what its predecessor was delivering pending and delivers that first:
a duplicate is only ever such a message, with its same key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis

from gateway import signing
from gateway.config import Store
from gateway.endpoints import Unavailable
from gateway.message import Message
from gateway.metrics import DELIVERIES
from gateway.runtime import Runtime, store_stream
from gateway.templates import TemplateProblem
from shop import keys
from shop.topology import FORWARDER_GROUP, SHOP
from streams import recovery, tracing
from streams.deadletter import DeadLetter
from streams.nodes import TRANSIENT
from streams.scripts import DEAD_LETTER, Script, evaluate, pairs
from streams.topology import dead

log = logging.getLogger("gateway")

# One consumer name for every processor of a stream: whoever holds the lease
# finds the messages its predecessor had read and not finished.
CONSUMER = "forwarder"
LEASE_MS = 10_000
BATCH = 20

# Take or renew the lease (KEYS[1]) for ARGV[1], for ARGV[2] ms; 0 if another holds it.
HOLD = Script(
    "gateway_hold_lease",
    """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
""",
)
RELEASE = Script(
    "gateway_release_lease",
    """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
""",
)

Trim = Callable[[str], Awaitable[None]]


class Forwarder:
    def __init__(self, runtime: Runtime, name: str, store: Store, tag: str, owner: str,
                 trim: Trim | None = None) -> None:
        self.runtime, self.name, self.store, self.owner = runtime, name, store, owner
        self.redis = runtime.redis
        self.stream = store_stream(name, tag)
        self.attempts = keys.delivery_attempts(self.stream)
        self.lease = keys.forwarder_lease(self.stream)
        self.target = runtime.targets[store.endpoint]
        self.trim = trim
        self._renewed = 0.0
        self._trimmed = 0.0
        self._group_ready = False

    async def run(self, stopping: asyncio.Event) -> None:
        """Forward until ``stopping``; Redis unreachable is waited out."""
        outage: recovery.Outage | None = None
        while not stopping.is_set():
            try:
                if not await self._hold():
                    await _pause(stopping, LEASE_MS / 3000)
                    continue
                if outage:
                    outage.over()
                    outage = None
                await self._ensure_group()
                for entry_id, fields in await self._read():
                    if stopping.is_set():
                        break
                    await self._deliver(entry_id, fields, stopping)
                await self._maintain()
            except TRANSIENT as exc:
                outage = outage or recovery.Outage(f"forwarder {self.stream}", exc)
                await _pause(stopping, outage.next_delay())
            except redis.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._group_ready = False
        with contextlib.suppress(redis.RedisError):
            await evaluate(self.redis, RELEASE, [self.lease], [self.owner])

    async def _hold(self) -> bool:
        """Take or renew the lease (at most every third of its life)."""
        if time.monotonic() - self._renewed < LEASE_MS / 3000:
            return True
        if await evaluate(self.redis, HOLD, [self.lease], [self.owner, LEASE_MS]):
            self._renewed = time.monotonic()
            return True
        self._renewed = 0.0
        return False

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self.redis.xgroup_create(self.stream, FORWARDER_GROUP, "0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def _read(self) -> list[tuple[str, dict[str, str] | None]]:
        """What this stream's processor had read and not finished, else what is new."""
        for start, block in (("0", None), (">", 1000)):
            answer = await self.redis.xreadgroup(FORWARDER_GROUP, CONSUMER, {self.stream: start},
                                                 count=BATCH, block=block)
            entries = _entries(answer)
            if entries:
                return entries
        return []

    async def _deliver(self, entry_id: str, fields: dict[str, str] | None,
                       stopping: asyncio.Event) -> None:
        """Deliver one message, trying until it is delivered or parked."""
        if not fields:  # deleted while pending: nothing to deliver
            await self._finish(entry_id)
            return
        message_id, order = fields.get("message_id", ""), fields.get("order_id", "?")
        trace = tracing.parse(fields.get("traceparent"))
        said = {"order_id": order, "trace_id": trace.trace_id if trace else ""}
        try:
            body = fields["body"].encode()
            path = str(self.store.path.render(Message(body=json.loads(body)).context()))
        except (KeyError, ValueError, TemplateProblem) as exc:
            await self._park(entry_id, fields, f"cannot be delivered: {exc}", 0)
            return
        wait = self.store.backoff.initial_s
        while not stopping.is_set():
            if not await self._hold():
                return  # another gateway forwards this stream now: it finds this one pending
            if (suspended := self.target.suspended_for()) > 0:
                await _pause(stopping, min(suspended, LEASE_MS / 3000))
                continue
            attempt = await self.redis.hincrby(self.attempts, entry_id, 1)
            headers = {"Content-Type": "application/json", "Idempotency-Key": message_id,
                       "X-Shop-Attempt": str(attempt), **self.store.headers}
            if trace:  # the receiver may go on with the order's trace
                headers["traceparent"] = trace.traceparent
            if self.store.sign:
                headers[self.store.sign.header] = signing.sign(self.store.sign.secret, body)
            try:
                status, _, _ = await self.target.send(self.store.method, path, body, headers)
            except Unavailable as exc:
                error, answered = str(exc), False
            else:
                if 200 <= status < 300:
                    await self._finish(entry_id)
                    DELIVERIES.labels(self.name, "delivered").inc()
                    log.info("%-12s order=%s delivered %s to %s (attempt %d)", self.name, order,
                             message_id, self.store.endpoint, attempt, extra=said)
                    return
                error, answered = f"{self.store.endpoint} answered {status}", True
            if attempt >= self.store.max_attempts:
                await self._park(entry_id, fields, f"{error}; gave up after {attempt} attempt(s)",
                                 attempt)
                return
            DELIVERIES.labels(self.name, "failed").inc()
            log.warning("%-12s order=%s delivery %s attempt %d of %d failed: %s", self.name,
                        order, message_id, attempt, self.store.max_attempts, error, extra=said)
            if answered:
                await _pause(stopping, wait)
                wait = min(wait * self.store.backoff.factor, self.store.backoff.max_s)

    async def _finish(self, entry_id: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.xack(self.stream, FORWARDER_GROUP, entry_id)
            pipe.hdel(self.attempts, entry_id)
            await pipe.execute()

    async def _park(self, entry_id: str, fields: dict[str, str], reason: str,
                    attempts: int) -> None:
        """Into the store's dead letters, with the reason (and acknowledged)."""
        letter = DeadLetter.of(self.stream, entry_id, fields, FORWARDER_GROUP, reason, attempts,
                               SHOP.subject)
        await evaluate(self.redis, DEAD_LETTER, [self.stream, dead(self.stream)],
                       [FORWARDER_GROUP, entry_id, *pairs(letter.to_fields(SHOP.subject))])
        await self.redis.hdel(self.attempts, entry_id)
        DELIVERIES.labels(self.name, "parked").inc()
        trace = tracing.parse(fields.get("traceparent"))
        log.warning("%-12s order=%s %s parked in %s: %s", self.name,
                    fields.get("order_id", "?"), fields.get("message_id", entry_id),
                    dead(self.stream), reason,
                    extra={"order_id": fields.get("order_id", "?"),
                           "trace_id": trace.trace_id if trace else ""})

    async def _maintain(self) -> None:
        """Trim what was delivered, past the retention, now and then."""
        if self.trim and time.monotonic() - self._trimmed > 10:
            self._trimmed = time.monotonic()
            await self.trim(self.stream)


def _entries(answer: Any) -> list[tuple[str, dict[str, str] | None]]:
    """XREADGROUP's answer for one stream: ``[[stream, [(id, fields), ...]]]``."""
    return [(entry_id, fields) for _stream, entries in answer or [] for entry_id, fields in entries]


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
