"""The running gateway as its mediators see it: its endpoints, its sequences,
its Redis (message stores, token buckets), its log."""

from __future__ import annotations

import asyncio
import json
import logging
from contextvars import ContextVar
from typing import Any

import httpx2

from gateway.config import Endpoint as EndpointConfig
from gateway.config import GatewayConfig
from gateway.endpoints import Endpoint, Group, Unavailable, states
from gateway.message import Fault, Message
from gateway.steps import run_steps
from shop import keys
from shop.topology import STORE_PREFIX
from streams import tracing
from streams.envelope import new_id, utc_now
from streams.scripts import Script, evaluate
from streams.topology import Topology

log = logging.getLogger("gateway")

# A token bucket: refilled at ARGV[1] tokens a second up to ARGV[2], one taken
# per request; its time is Redis's own (one clock for every gateway).
# KEYS: the bucket. Answers 1 (taken) or 0 (empty).
TAKE_TOKEN = Script(
    "gateway_throttle",
    """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1e6
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 't')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or t
tokens = math.min(burst, tokens + (t - last) * rate)
local taken = 0
if tokens >= 1 then tokens = tokens - 1; taken = 1 end
redis.call('HSET', KEYS[1], 'tokens', tokens, 't', t)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return taken
""",
)

# In a subscription's sequence: what its ``store`` steps asked to store
# (store, body, key), to be stored with the event's acknowledgement.
STORING: ContextVar[list[tuple[str, Any, str]] | None] = ContextVar("storing", default=None)

# How long the endpoints' states stay in Redis without a refresh.
STATES_TTL_S = 30


def store_stream(store: str, tag: str = "") -> str:
    """A message store's stream (of one partition): ``gateway.webhooks{p3}``."""
    return f"{STORE_PREFIX}{store}{tag}"


class Runtime:
    def __init__(self, config: GatewayConfig, redis: Any, topology: Topology) -> None:
        self.config, self.redis, self.topology = config, redis, topology
        self.name = config.name
        self.log = log
        self.http = httpx2.AsyncClient(follow_redirects=False)
        self.endpoints: dict[str, Endpoint] = {
            name: Endpoint(name, e, self.http, self._changed)
            for name, e in config.endpoints.items() if isinstance(e, EndpointConfig)}
        self.targets: dict[str, Endpoint | Group] = dict(self.endpoints)
        for name, group in config.endpoints.items():
            if not isinstance(group, EndpointConfig):
                self.targets[name] = Group(name, group, [self.endpoints[m]
                                                         for m in group.members()])
        self._publishing: set[asyncio.Task[None]] = set()

    # -- what mediators use --------------------------------------------------------------

    async def send(self, endpoint: str, method: str, path: str, body: Any,
                   headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        try:
            return await self.targets[endpoint].send(method, path, body, headers)
        except Unavailable as exc:
            raise Fault(str(exc)) from None

    async def store(self, store: str, body: Any, key: str) -> None:
        """Put a message in a store, in its key's partition (the order's), to
        be forwarded in order with the others of that key. In a subscription
        the message is only noted here: it is stored with the event's
        acknowledgement, in one step (``gateway.subscriptions``)."""
        noted = STORING.get()
        if noted is not None:
            noted.append((store, body, key))
            return
        stream = store_stream(store, self.topology.tag_of(key))
        await self.redis.xadd(stream, stored_fields(body, key, new_id()))

    async def throttle(self, key: str, rate_per_s: float, burst: int) -> bool:
        taken = await evaluate(self.redis, TAKE_TOKEN, [keys.throttle(self.name, key)],
                               [rate_per_s, burst])
        return bool(taken)

    async def run(self, sequence: str, message: Message) -> None:
        await run_steps(self.config.sequences[sequence], message, self)

    # -- what the operators see ----------------------------------------------------------

    def _changed(self, endpoint: Endpoint) -> None:
        task = asyncio.ensure_future(self.publish())
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def publish(self) -> None:
        """Every endpoint's state into Redis, for ``/ops/endpoints``."""
        found = {f"{self.name}/{name}": state for name, state in states(self.endpoints).items()}
        if not found:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(keys.gateway_endpoints(), mapping=found)
                pipe.expire(keys.gateway_endpoints(), STATES_TTL_S)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001  # a report: never the gateway's failure
            log.debug("could not publish the endpoints' states: %s", exc)

    async def aclose(self) -> None:
        await self.http.aclose()


def stored_fields(body: Any, key: str, message_id: str) -> dict[str, str]:
    """A stored message as stream fields: its id (the ``Idempotency-Key`` of
    every delivery of it), its key (the order), when, and its JSON."""
    hop = tracing.current()
    return {"message_id": message_id, "order_id": key, "stored_at": utc_now(),
            "body": json.dumps(body, separators=(",", ":"), default=str),
            "traceparent": hop.traceparent if hop else ""}
