"""Commands from concurrent requests, sent to Redis together.

The API places each order with one EVALSHA. Under load, many requests wait
on Redis at the same moment; sending each on its own costs a connection from
the pool, a write and a read in this process and in Redis, for every order.
``AutoPipeline`` queues the commands issued during one turn of the event
loop and sends them together at the start of the next, on one connection
of the client's pool: each caller still gets its own answer or its own
error, and none waits longer than that turn for the others.

It packs the commands with hiredis and reads the answers off the connection
itself, past redis-py's pipeline machinery, which took a quarter of the
API's CPU (measured: 0.12 -> 0.09 ms of API CPU per order).
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import redis.asyncio
from redis.asyncio.connection import AbstractConnection

Queued = tuple[tuple[Any, ...], "asyncio.Future[Any]"]


class NotSent(redis.ConnectionError):
    """Nothing of the command left this process: no connection could be had,
    or none could be opened. Safe to try again. Any other connection error or
    timeout of ``execute_command`` comes after the command was written, when
    Redis may have run it."""


class AutoPipeline:
    def __init__(self, client: redis.asyncio.Redis, max_batch: int = 256) -> None:
        self.client = client
        self.max_batch = max_batch
        self._queued: list[Queued] = []
        self._sending: set[asyncio.Task[None]] = set()  # keeps the tasks alive

    async def execute_command(self, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._queued:
            loop.call_soon(self._flush)
        self._queued.append((args, future))
        if len(self._queued) >= self.max_batch:
            self._flush()
        return await future

    async def evalsha(self, sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.execute_command("EVALSHA", sha, numkeys, *keys_and_args)

    async def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:
        return await self.execute_command("EVAL", script, numkeys, *keys_and_args)

    def _flush(self) -> None:
        batch, self._queued = self._queued, []
        if batch:
            task = asyncio.ensure_future(self._send(batch))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[Queued]) -> None:
        written = False

        async def round_trip() -> list[Any]:
            nonlocal written
            await connection.connect()  # after a drop; nothing when connected
            written = True
            return await self._round_trip(connection, batch)

        try:
            pool = self.client.connection_pool
            try:
                connection = await pool.get_connection()
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                raise NotSent(f"no connection to Redis: {exc}") from exc
            try:
                # As redis-py's pipeline does: on a dropped connection, reconnect
                # and send again, as often as the client's retry policy says. The
                # commands it sends (the create-order script) find their own
                # earlier run and answer as that one did.
                results = await connection.retry.call_with_retry(
                    round_trip, lambda _error: connection.disconnect(),
                )
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                await connection.disconnect()  # answers may be left unread on it
                if not written:
                    raise NotSent(f"could not reach Redis: {exc}") from exc
                raise
            except BaseException:  # answers may be left unread on it: drop it
                await connection.disconnect()
                raise
            finally:
                await pool.release(connection)
        except BaseException as exc:  # no answers: every caller hears of it
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # its caller went away
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    @staticmethod
    async def _round_trip(connection: AbstractConnection, batch: list[Queued]) -> list[Any]:
        await connection.send_packed_command([hiredis.pack_command(args) for args, _ in batch])
        results: list[Any] = []
        for _ in batch:
            try:
                results.append(await connection.read_response())
            except redis.ResponseError as exc:  # this command's error, not the connection's
                results.append(exc)
        return results
