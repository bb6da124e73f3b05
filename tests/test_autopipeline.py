"""The API's auto pipeline: concurrent commands go to Redis together, and each
caller still gets its own answer or its own error. Against a real server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.asyncio.connection import AbstractConnection

from shopctl.redis_server import RedisServer, free_port
from streams.autopipeline import AutoPipeline, Queued
from streams.connection import connect_async

pytestmark = pytest.mark.integration


def test_commands_of_one_turn_share_one_pipeline_and_keep_their_own_answers(
    real: redis.Redis, redis_server: RedisServer,
) -> None:
    real.set("text", "hello")

    async def run() -> list[object]:
        client = connect_async(redis_server.url)
        batched = AutoPipeline(client)
        try:
            calls = [batched.execute_command("INCR", f"n{i % 3}") for i in range(30)]
            calls.append(batched.execute_command("INCR", "text"))  # not a number
            calls.append(batched.eval("return ARGV[1]", 0, "script"))
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await client.aclose()

    real.config_resetstat()
    answers = asyncio.run(run())
    assert answers[:30] == [i // 3 + 1 for i in range(30)]
    assert isinstance(answers[30], redis.ResponseError)
    assert "not an integer" in str(answers[30])
    assert answers[31] == "script"
    clients = real.info("stats")["total_connections_received"]
    assert clients <= 2  # this test's own client, and one connection for all 32 commands


def test_a_batch_is_cut_at_max_batch(redis_server: RedisServer) -> None:
    sizes: list[int] = []

    class Recording(AutoPipeline):
        @staticmethod
        async def _round_trip(connection: AbstractConnection, batch: list[Queued]) -> list[Any]:
            sizes.append(len(batch))
            return await AutoPipeline._round_trip(connection, batch)

    async def run() -> list[object]:
        client = connect_async(redis_server.url)
        try:
            batched = Recording(client, max_batch=4)
            return await asyncio.gather(*(batched.execute_command("ECHO", i) for i in range(10)))
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [str(i) for i in range(10)]
    assert sorted(sizes) == [2, 4, 4]  # the batches may reach Redis in any order


def test_when_redis_is_unreachable_every_caller_gets_the_error() -> None:
    async def run() -> list[object]:
        client = connect_async(f"redis://127.0.0.1:{free_port()}/0")
        batched = AutoPipeline(client)
        try:
            return await asyncio.gather(
                *(batched.execute_command("PING") for _ in range(5)), return_exceptions=True)
        finally:
            await client.aclose()

    answers = asyncio.run(run())
    assert all(isinstance(a, redis.ConnectionError) for a in answers), answers


def test_a_connection_that_failed_mid_answer_is_dropped(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch,
) -> None:
    read = AbstractConnection.read_response
    calls = 0

    async def fails_on_the_second_answer(self: AbstractConnection, *a: Any, **k: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("between two answers")
        return await read(self, *a, **k)

    async def run() -> list[object]:
        client = connect_async(redis_server.url, max_connections=1)
        batched = AutoPipeline(client)
        try:
            assert await batched.execute_command("PING") == "PONG"  # connected first
            with monkeypatch.context() as patch:
                patch.setattr(AbstractConnection, "read_response", fails_on_the_second_answer)
                failed = await asyncio.gather(
                    *(batched.execute_command("ECHO", word) for word in ("one", "two", "three")),
                    return_exceptions=True)
            assert all(isinstance(f, RuntimeError) for f in failed), failed
            # Had the connection been kept, "two" would be read here.
            return [await batched.execute_command("ECHO", "next")]
        finally:
            await client.aclose()

    assert asyncio.run(run()) == ["next"]
