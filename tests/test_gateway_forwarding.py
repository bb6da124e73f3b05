"""Message stores and their forwarding processors, against the real server
and real HTTP receivers: in order per key, signed, the same idempotency key
on every attempt, a receiver that fails or flaps waited for, a suspended one
tried again on schedule, failover there and back, parking after the last
attempt and replay, one processor per stream at a time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio

from gateway import forwarding
from gateway.config import GatewayConfig
from gateway.forwarding import Forwarder
from gateway.main import _register
from gateway.runtime import Runtime, store_stream
from gateway.signing import verify
from shop import keys
from shop.topology import SHOP, with_gateway_stores
from shopctl.cli import main
from shopctl.redis_server import RedisServer
from streams import deadletter
from tests.receivers import Receiver, answer, flapping

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

SECRET = "a-secret-for-the-tests-only"
QUICK = {"retries": 0, "timeout_s": 0.5, "backoff": {"initial_s": 0.01, "factor": 2, "max_s": 0.02},
         "suspend": {"initial_s": 0.3, "factor": 2, "max_s": 1.2}}


def gateway(urls: list[str], endpoint: dict[str, Any] | None = None,
            **store: Any) -> GatewayConfig:
    """A gateway with one store, ``hooks``, forwarded to the receivers at
    ``urls`` (a failover group of them, when there are several)."""
    endpoints: dict[str, Any] = {f"r{i}": {"url": url, **QUICK, **(endpoint or {})}
                                 for i, url in enumerate(urls)}
    if len(urls) > 1:
        endpoints["hooks"] = {"failover": list(endpoints)}
    return GatewayConfig.model_validate({
        "name": "test", "endpoints": endpoints,
        "stores": {"hooks": {"endpoint": "hooks" if len(urls) > 1 else "r0",
                             "sign": {"secret": SECRET},
                             "backoff": {"initial_s": 0.05, "factor": 2, "max_s": 0.2},
                             **store}}})


class Running:
    """The forwarders of one store, each partition's, as tasks."""

    def __init__(self, runtime: Runtime, owner: str = "test-1") -> None:
        self.runtime, self.stopping = runtime, asyncio.Event()
        self.forwarders = [Forwarder(runtime, "hooks", runtime.config.stores["hooks"], tag, owner)
                           for tag in runtime.topology.tags()]
        self.tasks = [asyncio.create_task(f.run(self.stopping)) for f in self.forwarders]

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.gather(*self.tasks)


async def until(check: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


def with_gateway(server: RedisServer, config: GatewayConfig, partitions: int,
                 test: Callable[[Runtime], Awaitable[None]]) -> None:
    async def run() -> None:
        client = redis.asyncio.Redis.from_url(server.url, decode_responses=True)
        runtime = Runtime(config, client, SHOP.with_partitions(partitions))
        await _register(runtime)
        try:
            await test(runtime)
        finally:
            await runtime.aclose()
            await client.aclose()

    asyncio.run(run())


def store_orders(runtime: Runtime, orders: int, events: int) -> Awaitable[list[str]]:
    """``events`` messages for each of ``orders`` orders, interleaved; their ids."""
    async def store() -> list[str]:
        ids = []
        for n in range(events):
            for o in range(orders):
                body = {"order_id": f"ord_{o:016x}", "n": n}
                await runtime.store("hooks", body, body["order_id"])
                ids.append(f"{o}/{n}")
        return ids

    return store()


def by_order(bodies: list[dict[str, Any]]) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for body in bodies:
        found.setdefault(body["order_id"], []).append(body["n"])
    return found


@pytest.mark.parametrize("partitions", [1, 4])
def test_every_message_once_in_order_per_order_signed_through_a_flapping_receiver(
        redis_server: RedisServer, real: redis.Redis, receivers: Callable[..., Receiver],
        partitions: int) -> None:
    flappy = receivers(behave=flapping(3))

    async def test(runtime: Runtime) -> None:
        await store_orders(runtime, orders=6, events=5)
        forwarding = Running(runtime)
        await until(lambda: len(flappy.got) == 30)
        await forwarding.stop()

    brief = {"suspend": {"initial_s": 0.05, "factor": 2, "max_s": 0.1}}
    with_gateway(redis_server, gateway([flappy.url], brief), partitions, test)
    bodies = flappy.bodies()
    assert by_order(bodies) == {f"ord_{o:016x}": [0, 1, 2, 3, 4] for o in range(6)}
    keys_seen = [g.headers["Idempotency-Key"] for g in flappy.got]
    assert len(set(keys_seen)) == 30  # no duplicate without a crash
    for got in flappy.got:
        assert verify(SECRET, got.headers["X-Shop-Signature"], got.body)
        assert not verify("another-secret-entirely", got.headers["X-Shop-Signature"], got.body)
    # A failed attempt is tried again with the same key, counting its attempts.
    failed = [g for g in flappy.seen if g not in flappy.got]
    assert failed and all(g.headers["Idempotency-Key"] in keys_seen for g in failed)
    assert max(int(g.headers["X-Shop-Attempt"]) for g in flappy.got) >= 2
    stream = store_stream("hooks", SHOP.with_partitions(partitions).tags()[0])
    assert real.xpending(stream, "forwarder")["pending"] == 0
    assert not real.exists(keys.delivery_attempts(stream))  # forgotten once delivered


def test_a_receiver_that_does_not_answer_is_suspended_and_tried_again_on_schedule(
        redis_server: RedisServer, real: redis.Redis, receivers: Callable[..., Receiver]) -> None:
    slow = receivers(behave=answer(200, delay_s=0.6))  # longer than the 0.2 s timeout

    async def test(runtime: Runtime) -> None:
        await store_orders(runtime, orders=1, events=2)
        forwarding = Running(runtime)
        await until(lambda: len(slow.seen) == 3)  # tried, suspended 0.1 s, 0.2 s, ...
        slow.behave = answer(200)
        await until(lambda: any(g.json()["n"] == 1 for g in slow.got))
        await forwarding.stop()

    quick = {"timeout_s": 0.2, "suspend": {"initial_s": 0.1, "factor": 2, "max_s": 0.4}}
    with_gateway(redis_server, gateway([slow.url], quick), 1, test)
    tries = [g.at for g in slow.seen]
    # Each try waited for the suspension the one before it earned: 0.1 s, then 0.2 s
    # (each try itself takes its 0.2 s timeout).
    assert tries[1] - tries[0] >= 0.2 + 0.1 and tries[2] - tries[1] >= 0.2 + 0.2
    # The first message until it was answered in time, then the second: in order.
    assert [g.json()["n"] for g in slow.seen] == [0, 0, 0, 0, 1]
    # A receiver that answers too late got the message nonetheless (the gateway
    # cannot know): it gets it again, with the same key, and keeps it once.
    assert len({g.headers["Idempotency-Key"] for g in slow.seen[:4]}) == 1


def test_failover_to_the_second_receiver_and_back_to_the_first(
        redis_server: RedisServer, real: redis.Redis, receivers: Callable[..., Receiver]) -> None:
    first, second = receivers(behave=answer(503)), receivers()

    async def test(runtime: Runtime) -> None:
        await store_orders(runtime, orders=1, events=3)
        forwarding = Running(runtime)
        await until(lambda: len(second.got) == 3)
        first.behave = answer(200)
        await asyncio.sleep(0.4)  # the first one's suspension (0.3 s) ends
        await store_orders(runtime, orders=1, events=1)
        await until(lambda: len(first.got) == 1)
        await forwarding.stop()

    with_gateway(redis_server, gateway([first.url, second.url]), 1, test)
    assert [g.json()["n"] for g in second.got] == [0, 1, 2]
    assert [g.json()["n"] for g in first.got] == [0]  # the later message, back on the first
    assert len(first.seen) == 2  # tried once, suspended, then its trial answered


def test_after_the_last_attempt_a_message_is_parked_and_a_replay_delivers_it_again(
        redis_server: RedisServer, real: redis.Redis, receivers: Callable[..., Receiver],
        capsys: pytest.CaptureFixture[str]) -> None:
    refusing = receivers(behave=answer(422))

    async def test(runtime: Runtime) -> None:
        await store_orders(runtime, orders=1, events=2)
        forwarding = Running(runtime)
        await until(lambda: len(refusing.seen) == 6)  # 3 attempts each
        await until(lambda: real.xlen("gateway.hooks.dead") == 2)
        topology = await with_gateway_stores(runtime.redis, runtime.topology)
        parked = await deadletter.list_dead(runtime.redis, topology, "gateway.hooks")
        assert [p.letter.reason for p in parked if p.letter] == [
            "r0 answered 422; gave up after 3 attempt(s)"] * 2
        assert {p.letter.deliveries for p in parked if p.letter} == {3}
        # As shopctl dead lists them, with the shop's own.
        assert await asyncio.to_thread(main, ["dead", "list", "--redis-url", redis_server.url]) == 0
        listed = capsys.readouterr().out.splitlines()
        assert listed[-1] == "2 dead letter(s)" and all(
            line.startswith("gateway.hooks.dead/") and "group=forwarder  deliveries=3" in line
            for line in listed[:-1])
        refusing.behave = answer(200)
        results = await deadletter.replay(runtime.redis, topology, [p.ref for p in parked])
        assert all(r.startswith("replayed as gateway.hooks ") for r in results.values())
        await until(lambda: len(refusing.got) == 2)
        await forwarding.stop()

    with_gateway(redis_server, gateway([refusing.url], max_attempts=3), 1, test)
    first_keys = {g.headers["Idempotency-Key"] for g in refusing.seen[:6]}
    assert {g.headers["Idempotency-Key"] for g in refusing.got} == first_keys
    assert [g.json()["n"] for g in refusing.got] == [0, 1]  # replayed oldest first
    assert real.xlen("gateway.hooks.dead") == 0
    waits = [b.at - a.at for a, b in zip(refusing.seen[:2], refusing.seen[1:3], strict=True)]
    assert waits[0] >= 0.05 and waits[1] >= 0.1  # the store's back-off, doubling


def test_one_processor_per_stream_and_another_takes_over_when_it_stops(
        redis_server: RedisServer, real: redis.Redis, receivers: Callable[..., Receiver],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forwarding, "LEASE_MS", 1500)  # the waiting one asks every 0.5 s
    receiver = receivers()

    async def test(runtime: Runtime) -> None:
        first = Running(runtime, owner="gateway-a")
        await until(lambda: real.get(keys.forwarder_lease("gateway.hooks")) == "gateway-a")
        second = Running(runtime, owner="gateway-b")
        await store_orders(runtime, orders=2, events=3)
        await until(lambda: len(receiver.got) == 6)
        assert real.get(keys.forwarder_lease("gateway.hooks")) == "gateway-a"
        await first.stop()  # releases the lease
        await store_orders(runtime, orders=1, events=1)
        await until(lambda: len(receiver.got) == 7, timeout_s=forwarding.LEASE_MS / 1000)
        assert real.get(keys.forwarder_lease("gateway.hooks")) == "gateway-b"
        await second.stop()

    with_gateway(redis_server, gateway([receiver.url]), 1, test)
    assert len({g.headers["Idempotency-Key"] for g in receiver.got}) == 7


def test_the_stores_are_registered_for_the_operators(redis_server: RedisServer,
                                                      real: redis.Redis) -> None:
    async def test(runtime: Runtime) -> None:
        topology = await with_gateway_stores(runtime.redis, runtime.topology)
        assert "gateway.hooks" in topology.streams
        assert json.loads(real.hget(keys.gateway_endpoints(), "test/r0"))["state"] == "active"

    with_gateway(redis_server, gateway(["http://127.0.0.1:9"]), 1, test)


@pytest.mark.integration
@pytest.mark.timeout(30)
def test_a_gateway_started_before_its_redis_waits_for_it_instead_of_dying(
        tmp_path: Any) -> None:
    """Started while Redis is down (or loading its data after a crash), the
    gateway waits, then checks the partitions and registers its stores: no
    traceback for the launcher to start again."""
    from gateway.main import _until_ready
    from shopctl.redis_server import free_port

    port = free_port()
    server = RedisServer(port, tmp_path, aof=False)

    async def run() -> None:
        client = redis.asyncio.Redis(port=port, decode_responses=True)
        runtime = Runtime(gateway(["http://127.0.0.1:9/none"]), client, SHOP)
        waiting = asyncio.create_task(_until_ready(runtime))
        await asyncio.sleep(0.5)
        assert not waiting.done()  # nothing to talk to yet: it waits
        await asyncio.to_thread(server.start)
        await asyncio.wait_for(waiting, 20)
        assert await client.smembers(keys.gateway_stores()) == {store_stream("hooks")}
        await runtime.aclose()
        await client.aclose()

    try:
        asyncio.run(run())
    finally:
        server.stop()
