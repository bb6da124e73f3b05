"""A proxy as its clients see it: in, target, out; faults, with and without
a fault sequence; a body too large, a path or method it does not have, a
body that is not JSON, a client over its rate: each a JSON answer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx2
import pytest
import redis.asyncio

from gateway.config import GatewayConfig
from gateway.proxy import app_for
from gateway.runtime import Runtime
from shop.topology import SHOP
from shopctl.redis_server import RedisServer
from tests.receivers import Receiver, answer

pytestmark = pytest.mark.integration

CONFIG = """
name: test
endpoints:
  backend: {url: "%s", retries: 0, timeout_s: 2}
  nowhere: {url: "http://127.0.0.1:9", retries: 0, timeout_s: 1}
proxies:
  front:
    listen: 127.0.0.1:5999
    max_body_bytes: 1024
    routes:
      - method: POST
        path: /things/{id}
        in:
          - throttle: {key: 'request.headers["x-client"]', rate_per_s: 0.1, burst: 2}
          - transform: {body: {id: "{{ params.id }}", size: "{{ body.n * 2 }}"}}
        target: {endpoint: backend, method: PUT, path: "/store/{{ params.id }}"}
        out:
          - respond: {status: 201, body: {stored: "{{ body.ok }}", id: "{{ params.id }}"}}
      - method: GET
        path: /down
        target: {endpoint: nowhere}
        fault:
          - respond: {status: 503, body: {error: "down: {{ failed }}"}}
      - method: GET
        path: /down-without-fault
        target: {endpoint: nowhere}
"""


def with_proxy(server: RedisServer, backend: str,
               test: Callable[[httpx2.AsyncClient], Awaitable[None]]) -> None:
    import yaml

    config = GatewayConfig.model_validate(yaml.safe_load(CONFIG % backend))

    async def run() -> None:
        client = redis.asyncio.Redis.from_url(server.url, decode_responses=True)
        runtime = Runtime(config, client, SHOP)
        app = app_for("front", config.proxies["front"], runtime)
        try:
            async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app),
                                          base_url="http://proxy") as http:
                await test(http)
        finally:
            await runtime.aclose()
            await client.aclose()

    asyncio.run(run())


def test_in_target_and_out_shape_a_request_and_its_answer(
        redis_server: RedisServer, real: Any, receivers: Callable[..., Receiver]) -> None:
    backend = receivers()

    async def test(http: httpx2.AsyncClient) -> None:
        answered = await http.post("/things/t-1", json={"n": 21}, headers={"X-Client": "a"})
        assert (answered.status_code, answered.json()) == (201, {"stored": True, "id": "t-1"})

    with_proxy(redis_server, backend.url, test)
    [got] = backend.got
    assert (got.method, got.path, got.json()) == ("PUT", "/store/t-1", {"id": "t-1", "size": 42})


def test_a_client_over_its_rate_is_answered_429(
        redis_server: RedisServer, real: Any, receivers: Callable[..., Receiver]) -> None:
    backend = receivers()

    async def test(http: httpx2.AsyncClient) -> None:
        codes = [(await http.post("/things/t", json={"n": 1}, headers={"X-Client": "a"}))
                 for _ in range(3)]
        assert [c.status_code for c in codes] == [201, 201, 429]
        assert codes[2].json() == {"error": "too many requests; try again shortly"}
        assert codes[2].headers["Retry-After"] == "1"
        other = await http.post("/things/t", json={"n": 1}, headers={"X-Client": "b"})
        assert other.status_code == 201  # a bucket per client

    with_proxy(redis_server, backend.url, test)
    assert len(backend.got) == 3


def test_faults_and_refusals_are_json(redis_server: RedisServer, real: Any,
                                      receivers: Callable[..., Receiver]) -> None:
    backend = receivers(behave=answer(200))

    async def test(http: httpx2.AsyncClient) -> None:
        down = await http.get("/down")
        assert (down.status_code, down.json()) == (503, {"error": "down: target"})
        bare = await http.get("/down-without-fault")
        assert bare.status_code == 502
        # Suspended by the request before: not tried, and said so.
        assert bare.json()["error"].startswith("nowhere: suspended for ")
        assert bare.json()["error"].endswith("ConnectError: All connection attempts failed")
        assert (await http.get("/nothing")).json() == {"error": "Not found"}
        wrong = await http.delete("/down")
        assert (wrong.status_code, wrong.json()) == (405, {"error": "Method not allowed"})
        not_json = await http.post("/things/t", content=b"n=1", headers={"X-Client": "c"})
        assert not_json.status_code == 502
        assert not_json.json()["error"].startswith("the body is not JSON: ")
        # The template needs body.n: a body without it is a fault, not a 500.
        lacking = await http.post("/things/t", json={"m": 1}, headers={"X-Client": "d"})
        assert lacking.status_code == 502 and "transform: template" in lacking.json()["error"]
        large = await http.post("/things/t", content=b"x" * 2000, headers={"X-Client": "e"})
        assert (large.status_code, large.json()) == (413, {
            "error": "the body is over 1024 bytes"})

        async def chunks() -> Any:
            for _ in range(4):
                yield b"x" * 400

        streamed = await http.post("/things/t", content=chunks(), headers={"X-Client": "e"})
        assert streamed.status_code == 413

    with_proxy(redis_server, backend.url, test)
    assert backend.got == []
