"""Endpoints against real HTTP receivers: retries with back-off, timeouts,
suspension that grows and ends with a trial, 4xx as an answer, failover and
its way back, round robin; and the runtime's Redis parts (token buckets,
published states) against the real server."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
import redis.asyncio

from gateway.config import Endpoint as EndpointConfig
from gateway.config import GatewayConfig
from gateway.config import Group as GroupConfig
from gateway.endpoints import Endpoint, Group, Unavailable
from gateway.receiver import serve
from gateway.runtime import Runtime
from gateway.signing import sign
from shop import keys
from shop.topology import SHOP
from shopctl.redis_server import RedisServer
from tests.receivers import Receiver, answer, flapping

pytestmark = pytest.mark.integration

FAST = {"backoff": {"initial_s": 0.01, "factor": 2, "max_s": 0.02},
        "suspend": {"initial_s": 0.3, "factor": 2, "max_s": 1.0}}


def endpoint(url: str, **config: Any) -> EndpointConfig:
    return EndpointConfig.model_validate({"url": url, **FAST, **config})


def run(test: Any) -> Any:
    async def with_client() -> Any:
        async with httpx2.AsyncClient() as client:
            return await test(client)

    return asyncio.run(with_client())


def test_a_failure_is_tried_again_after_a_growing_back_off(
        receivers: Callable[..., Receiver]) -> None:
    target = receivers(behave=lambda n: (503, 0) if n < 2 else (200, 0))

    async def test(client: httpx2.AsyncClient) -> None:
        shop = Endpoint("shop", endpoint(target.url, retries=2), client)
        status, body, _ = await shop.send("POST", "/hooks", {"a": 1}, {"X-Try": "1"})
        assert (status, body) == (200, {"ok": True})
        assert shop.state.state == "active" and shop.state.sent == 3

    run(test)
    first, second, third = target.seen
    assert second.at - first.at >= 0.01 and third.at - second.at >= 0.02  # 0.01, then doubled
    assert third.json() == {"a": 1} and third.headers["X-Try"] == "1"


def test_a_4xx_is_an_answer_not_a_failure(receivers: Callable[..., Receiver]) -> None:
    target = receivers(behave=answer(404))

    async def test(client: httpx2.AsyncClient) -> None:
        shop = Endpoint("shop", endpoint(target.url), client)
        assert (await shop.send("GET", "/x", None, {}))[0] == 404
        assert not shop.suspended

    run(test)
    assert len(target.seen) == 1


def test_a_timeout_or_a_closed_connection_fails_and_suspends(
        receivers: Callable[..., Receiver]) -> None:
    slow = receivers(behave=answer(200, delay_s=1.0))
    rude = receivers(behave=answer(0))

    async def test(client: httpx2.AsyncClient) -> None:
        waiting = Endpoint("slow", endpoint(slow.url, timeout_s=0.1, retries=0), client)
        with pytest.raises(Unavailable, match=r"slow: ReadTimeout \(1 tries\)"):
            await waiting.send("POST", "/", {}, {})
        assert waiting.suspended and waiting.state.last_error == "ReadTimeout"
        closing = Endpoint("rude", endpoint(rude.url, retries=1), client)
        with pytest.raises(Unavailable, match=r"rude: RemoteProtocolError.* \(2 tries\)"):
            await closing.send("POST", "/", {}, {})
        assert closing.state.state == "suspended" and closing.state.failures == 1

    run(test)


def test_suspension_grows_with_each_failed_trial_and_ends_with_an_answer(
        receivers: Callable[..., Receiver]) -> None:
    target = receivers(behave=answer(503))

    async def test(client: httpx2.AsyncClient) -> None:
        changes: list[str] = []
        shop = Endpoint("shop", endpoint(target.url, retries=0), client,
                        lambda e: changes.append(e.state.state))
        with pytest.raises(Unavailable):
            await shop.send("POST", "/", {}, {})
        assert 0.2 < shop.suspended_for() <= 0.3
        with pytest.raises(Unavailable, match="shop: suspended for .* after 1 failure"):
            await shop.send("POST", "/", {}, {})  # not sent: suspended
        assert len(target.seen) == 1
        await asyncio.sleep(shop.suspended_for())
        with pytest.raises(Unavailable):
            await shop.send("POST", "/", {}, {})  # the trial fails: twice as long
        assert 0.5 < shop.suspended_for() <= 0.6 and shop.state.failures == 2
        target.behave = answer(200)
        await asyncio.sleep(shop.suspended_for())
        assert (await shop.send("POST", "/", {}, {}))[0] == 200  # the trial answers
        assert shop.state.state == "active" and shop.state.failures == 0
        target.behave = answer(503)
        with pytest.raises(Unavailable):
            await shop.send("POST", "/", {}, {})
        assert 0.2 < shop.suspended_for() <= 0.3  # short again after an answer
        assert changes == ["suspended", "suspended", "active", "suspended"]

    run(test)
    assert len(target.seen) == 4


def test_failover_switches_to_the_next_and_back_once_the_first_answers(
        receivers: Callable[..., Receiver]) -> None:
    first = receivers(behave=answer(503))
    second = receivers()

    async def test(client: httpx2.AsyncClient) -> None:
        a = Endpoint("a", endpoint(first.url, retries=0), client)
        b = Endpoint("b", endpoint(second.url, retries=0), client)
        off = Endpoint("off", endpoint(""), client)  # no url: left out
        group = Group("hooks", GroupConfig(failover=["a", "off", "b"]), [a, off, b])
        assert group.members == [a, b]
        for n in range(3):
            assert (await group.send("POST", "/", {"n": n}, {}))[0] == 200
        assert [g.json()["n"] for g in second.got] == [0, 1, 2]  # a was tried once only
        assert len(first.seen) == 1
        first.behave = answer(200)
        await asyncio.sleep(a.suspended_for())
        assert (await group.send("POST", "/", {"n": 3}, {}))[0] == 200
        assert [g.json()["n"] for g in first.got] == [3]  # back to the first

    run(test)


def test_a_group_with_every_member_down_says_when_one_may_be_tried(
        receivers: Callable[..., Receiver]) -> None:
    down = receivers(behave=answer(500))

    async def test(client: httpx2.AsyncClient) -> None:
        a = Endpoint("a", endpoint(down.url, retries=0), client)
        group = Group("hooks", GroupConfig(failover=["a"]), [a])
        with pytest.raises(Unavailable, match=r"hooks: a: answered 500 \(1 tries\)"):
            await group.send("POST", "/", {}, {})
        with pytest.raises(Unavailable, match=r"hooks: every member suspended, a for 0\.\d+s"):
            await group.send("POST", "/", {}, {})
        assert 0 < group.suspended_for() <= 0.3

    run(test)


def test_round_robin_takes_turns_and_skips_a_suspended_member(
        receivers: Callable[..., Receiver]) -> None:
    one, two = receivers(), receivers(behave=flapping(2))

    async def test(client: httpx2.AsyncClient) -> None:
        members = [Endpoint("one", endpoint(one.url, retries=0), client),
                   Endpoint("two", endpoint(two.url, retries=0), client)]
        group = Group("spread", GroupConfig(round_robin=["one", "two"]), members)
        for n in range(8):
            assert (await group.send("POST", "/", {"n": n}, {}))[0] == 200

    run(test)
    # Turns: one, two, one, two (two now fails, is suspended: its turn goes
    # to one), one, one...
    assert [g.json()["n"] for g in two.got] == [1, 3]
    assert [g.json()["n"] for g in one.got] == [0, 2, 4, 5, 6, 7]


def gateway_config(**endpoints: Any) -> GatewayConfig:
    return GatewayConfig.model_validate({"name": "test", "endpoints": endpoints})


def test_the_token_bucket_is_kept_in_redis(redis_server: RedisServer, real: Any) -> None:
    async def test() -> None:
        client = redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True)
        runtime = Runtime(gateway_config(), client, SHOP)
        try:
            taken = [await runtime.throttle("till-1", rate_per_s=0.5, burst=2) for _ in range(3)]
            assert taken == [True, True, False]
            assert await runtime.throttle("till-2", rate_per_s=0.5, burst=2)  # its own bucket
            assert 0 < await client.pttl(keys.throttle("test", "till-1")) <= 5000
        finally:
            await runtime.aclose()
            await client.aclose()

    asyncio.run(test())


def test_each_endpoints_state_is_published_for_the_operators(
        redis_server: RedisServer, real: Any, receivers: Callable[..., Receiver]) -> None:
    down = receivers(behave=answer(503))

    async def test() -> None:
        client = redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True)
        runtime = Runtime(gateway_config(hooks={"url": down.url, "retries": 0, **FAST}), client,
                          SHOP)
        try:
            await runtime.publish()
            with pytest.raises(Exception, match="hooks: answered 503"):
                await runtime.send("hooks", "POST", "/", {}, {})
            for _ in range(100):  # the change is published in the background
                state = json.loads(await client.hget(keys.gateway_endpoints(), "test/hooks")
                                   or "{}")
                if state.get("state") == "suspended":
                    break
                await asyncio.sleep(0.01)
            assert state["last_error"] == "answered 503" and state["suspended_until"]
            assert 0 < await client.ttl(keys.gateway_endpoints()) <= 30
        finally:
            await runtime.aclose()
            await client.aclose()

    asyncio.run(test())


def test_the_example_receiver_checks_signatures_and_takes_a_key_once(
        capsys: pytest.CaptureFixture[str]) -> None:
    server = serve("127.0.0.1", 0, "a-secret-for-the-receiver", fail=1)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    body = json.dumps({"order_id": "ord_1", "status": "completed"}).encode()
    try:
        with httpx2.Client() as http:
            def post(secret: str, key: str = "k-1") -> int:
                return http.post(url, content=body, headers={
                    "Idempotency-Key": key, "X-Shop-Attempt": "1",
                    "X-Shop-Signature": sign(secret, body)}).status_code

            assert post("a-secret-for-the-receiver") == 503  # --fail 1
            assert post("someone-elses-secret") == 401
            assert post("a-secret-for-the-receiver") == 200
            assert post("a-secret-for-the-receiver") == 200  # again: taken once
    finally:
        server.shutdown()
        server.server_close()
    assert capsys.readouterr().out.splitlines() == [
        "answered 503 to k-1 (--fail: 0 more)",
        "refused k-1: bad or missing signature",
        "order ord_1 completed (key k-1, attempt 1, signature ok)",
        "order ord_1 completed (key k-1, attempt 1, signature ok): again, already taken"]


def test_the_example_receiver_takes_nothing_from_a_request_cut_off_mid_body(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A gateway killed while it sends leaves half a request: the receiver must
    not take its key, or the whole delivery that follows would be 'again'."""
    server = serve("127.0.0.1", 0, None, fail=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    body = json.dumps({"order_id": "ord_1", "status": "completed"}).encode()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as cut:
            cut.sendall(b"POST /hooks HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k-1\r\n"
                        b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
            cut.shutdown(socket.SHUT_WR)  # and the sender is gone
            assert cut.recv(100) == b""  # no answer: nothing was taken
        answer = httpx2.post(f"http://127.0.0.1:{port}/hooks", content=body,
                             headers={"Idempotency-Key": "k-1", "X-Shop-Attempt": "2"})
        assert answer.status_code == 200
        with socket.create_connection(("127.0.0.1", port), timeout=5) as big:
            big.sendall(b"POST /hooks HTTP/1.1\r\nHost: x\r\nIdempotency-Key: k-2\r\n"
                        b"Content-Length: %d\r\n\r\n" % (2 << 20))  # refused before reading
            assert big.recv(100).startswith(b"HTTP/1.0 413")
    finally:
        server.shutdown()
        server.server_close()
    assert capsys.readouterr().out.splitlines() == [
        "order ord_1 completed (key k-1, attempt 2)",
        f"refused k-2: {2 << 20} bytes is over 1 MiB"]
