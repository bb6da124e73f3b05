"""Subscriptions: a sequence bound to the shop's events through a consumer
group of its own (``gateway.<subscription>``).

Each subscription is a consumer of the bus (``streams.consumer``), with
everything a worker has: its own pending entries first after a crash,
claims from a dead replica, retries with back-off and, after the last, the
event dead-lettered with the error. Like a worker's, its group starts from
the oldest event the streams keep, so that the events before the gateway
started are not missed (a new subscription on a shop that has run for a
while gets up to ``STREAM_RETENTION_S`` of its past).

For each event its sequence runs (on the gateway's event loop: mediators
are async); a ``store`` step only notes what to store. Then one atomic
step stores those messages, in the event's partition, and acknowledges the
event: an event is stored exactly once, or not at all and delivered again.
A dead letter of the saga's groups is an event too (``dead_letter``: the
order ``failed``); a subscriber's own dead letters are not.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

from gateway.config import Subscription
from gateway.message import Drop, Message, Respond
from gateway.runtime import STORING, Runtime, store_stream
from gateway.steps import run_steps
from shop import keys
from shop.topology import SHOP
from streams import metrics, middleware, tracing
from streams.consumer import Consumer
from streams.deadletter import DEAD_LETTER_TYPE, DeadLetter
from streams.envelope import Envelope, utc_now
from streams.outcomes import Ack, Apply, Outcome
from streams.scripts import Step
from streams.settings import WorkerSettings

# Store the noted messages and acknowledge the event, atomically. An event no
# longer pending (another consumer claimed and stored it meanwhile) stores
# nothing, and neither does a message id the store took in the last day.
# K: per message, its store stream and that stream's seen ids (in the event's
# slot). A: per message, its message_id, order_id, stored_at, body and traceparent
# (the event's hop: its deliveries are in the order's trace).
STORE = Step(
    "gateway_store",
    """
if #redis.call('XPENDING', input, group, entry_id, entry_id, 1) == 0 then
  return {'duplicate'}
end
local now = tonumber(redis.call('TIME')[1])
local stored = 0
for i = 1, #K / 2 do
  local stream, seen, a = K[2 * i - 1], K[2 * i], (i - 1) * 5
  if redis.call('ZADD', seen, 'NX', now, A[a + 1]) == 1 then
    redis.call('XADD', stream, '*', 'message_id', A[a + 1], 'order_id', A[a + 2],
               'stored_at', A[a + 3], 'body', A[a + 4], 'traceparent', A[a + 5])
    stored = stored + 1
  end
  redis.call('ZREMRANGEBYSCORE', seen, '-inf', now - 86400)
end
return {'stored', stored, #K / 2 - stored}
""",
    publishes=False,
)

# How long one event's sequence may run (its calls included) before the
# event counts as failed and is delivered again later.
SEQUENCE_TIMEOUT_S = 60.0


def group_of(subscription: str) -> str:
    return f"gateway.{subscription}"


def message_of(event: Envelope | DeadLetter, config_vars: dict[str, Any]) -> Message:
    """What a sequence sees of an event: its payload as ``body``; its type,
    id, order and time as ``request`` (``request.event``, ``request.id``,
    ``request.order_id``, ``request.occurred_at``)."""
    if isinstance(event, DeadLetter):
        request = {"event": DEAD_LETTER_TYPE, "order_id": event.subject,
                   # One per entry: the dead letters of each group that gave up on it
                   # are one message.
                   "id": f"dead:{event.stream}:{event.entry_id}",
                   "occurred_at": event.failed_at}
        body: Any = {"reason": event.reason, "group": event.group, "stream": event.stream,
                     "entry_id": event.entry_id}
    else:
        request = {"event": event.type, "id": event.event_id, "order_id": event.subject,
                   "occurred_at": event.occurred_at}
        body = event.payload.model_dump(mode="json")
    return Message(body=body, request=request, vars=dict(config_vars))


class Subscriber:
    """One subscription's consumer; ``run`` blocks (a thread of its own), its
    sequences run on ``loop``."""

    def __init__(self, name: str, subscription: Subscription, runtime: Runtime, client: Any,
                 settings: WorkerSettings, loop: asyncio.AbstractEventLoop,
                 measured: bool = False) -> None:
        self.name, self.subscription, self.runtime, self.loop = name, subscription, runtime, loop
        self.consumer = Consumer(
            client, runtime.topology, group_of(name),
            dict.fromkeys(subscription.events, self.handle),
            name=settings.worker_name, batch_size=settings.worker_batch_size,
            block_ms=settings.worker_block_ms, max_deliveries=settings.worker_max_deliveries,
            retry_after_s=settings.worker_retry_after_s,
            claim_idle_ms=settings.worker_claim_idle_ms,
            middleware=(*middleware.DEFAULT, metrics.count) if measured else middleware.DEFAULT,
            wait_replicas=settings.wait_replicas, wait_ms=settings.redis_wait_ms,
            poll_ms=settings.worker_poll_ms)

    def run(self) -> None:
        self.consumer.run()

    def stop(self) -> None:
        self.consumer.stop()

    def handle(self, event: Envelope | DeadLetter) -> Outcome:
        if isinstance(event, DeadLetter) and event.group not in SHOP.groups():
            return Ack(f"dead letter of {event.group}, not of the saga: not an order's end")
        if isinstance(event, DeadLetter) and not event.subject:
            return Ack(f"dead letter from {event.stream} names no order: nothing to say")
        message = message_of(event, self.runtime.config.vars)
        future = asyncio.run_coroutine_threadsafe(self._sequence(message), self.loop)
        try:
            noted = future.result(SEQUENCE_TIMEOUT_S)
        except TimeoutError:
            future.cancel()
            raise TimeoutError(f"the sequence ran over {SEQUENCE_TIMEOUT_S:g}s") from None
        if not noted:
            return Ack("nothing to store")
        tag = event.tag if isinstance(event, Envelope) else SHOP.split(event.stream)[1]
        seen: Counter[str] = Counter()
        streams, args = [], []
        hop = context.traceparent if (context := tracing.current()) else ""
        for store, body, key in noted:
            seen[store] += 1
            message_id = message.request["id"] + (f"-{seen[store]}" if seen[store] > 1 else "")
            streams += [store_stream(store, tag), keys.store_seen(store_stream(store, tag))]
            args += [message_id, key, utc_now(),
                     json.dumps(body, separators=(",", ":"), default=str), hop]
        where = ", ".join(dict.fromkeys(store for store, _, _ in noted))
        return Apply(STORE, streams, args, describe=lambda result: _described(result, where))

    async def _sequence(self, message: Message) -> list[tuple[str, Any, str]]:
        """Run the sequence; what its ``store`` steps noted (nothing if dropped)."""
        noted: list[tuple[str, Any, str]] = []
        STORING.set(noted)
        try:
            await run_steps(self.subscription.sequence, message, self.runtime)
        except Drop:
            return []
        except Respond:
            pass  # an answer means nothing to an event: the sequence ends here
        return noted


def _described(result: list[Any], where: str) -> str:
    match result:
        case ["stored", stored, 0]:
            return f"stored for delivery in {where}"
        case ["stored", 0, _]:
            return f"already stored in {where} (the same message, once): nothing changed"
        case ["stored", stored, seen]:
            return f"stored {stored} for delivery in {where}, {seen} already there"
    return "already handled: nothing changed"
