"""Commands from concurrent requests, sent to Redis together.

The API places each order with one EVALSHA. Under load, many requests wait
on Redis at the same moment; sending each on its own costs a connection from
the pool, a write and a read in this process and in Redis, for every order.
``AutoPipeline`` queues the commands issued during one turn of the event
loop and sends them as one pipeline at the start of the next: each caller
still gets its own answer or its own error, and none waits longer than that
turn for the others.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio


class AutoPipeline:
    def __init__(self, client: redis.asyncio.Redis, max_batch: int = 256) -> None:
        self.client = client
        self.max_batch = max_batch
        self._queued: list[tuple[tuple[Any, ...], asyncio.Future[Any]]] = []
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

    async def _send(self, batch: list[tuple[tuple[Any, ...], asyncio.Future[Any]]]) -> None:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for args, _ in batch:
                    pipe.execute_command(*args)
                results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:  # the connection failed: every caller hears of it
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
