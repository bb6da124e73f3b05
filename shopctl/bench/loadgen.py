"""The load generator: HTTP/1.1 keep-alive over asyncio streams, a few dozen
lines so that its own ceiling is far above what it measures (that ceiling is
measured too, against a server that does nothing).

Closed loop: ``concurrency`` connections each send the next request as soon as
the last one is answered (for the saturation phases). Open loop: requests are
sent on a fixed schedule whatever the answers, and each latency is measured
from the time the request was *due*, so a slow server cannot hide its delays
by slowing the sender (no coordinated omission).

Both run with the cyclic garbage collector off: by the later phases this
process holds hundreds of thousands of objects (every sample so far), and a
full collection would pause it for tens of milliseconds in the middle of a
phase, a pause every latency due at that moment would count as the system's.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar


@dataclass(slots=True)
class Sample:
    key: int  # which request (its index)
    sent_ms: float  # wall clock, ms since the epoch: when it was due (open) or sent (closed)
    latency_ms: float
    status: int
    body: bytes
    # Open loop: how late the request left this process after it was due (its
    # own scheduling delay, counted in latency_ms as open loop must).
    late_ms: float = 0.0


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time. A Protocol
    rather than asyncio streams: half the load generator's CPU per request."""

    def __init__(self, host: str) -> None:
        self.host = host.encode()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(lambda: cls(host), host, port)
        return connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0 or self.waiter is None:
            return
        head = bytes(self.buffer[:end])
        length = 0
        at = head.lower().find(b"content-length:")
        if at >= 0:
            length = int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0
                              else len(head)])
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        waiter, self.waiter = self.waiter, None
        if not waiter.done():
            waiter.set_result((int(head[9:12]), body))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionError("the server closed the connection"))

    async def post(self, path: bytes, body: bytes, headers: bytes = b"") -> tuple[int, bytes]:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("the connection is closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n%s\r\n%s" % (path, self.host, len(body), headers, body)
        )
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


Bodies = Callable[[int], tuple[bytes, bytes]]  # index -> (body, extra header lines)

P = ParamSpec("P")
R = TypeVar("R")


def without_gc_pauses(run: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Run a phase with the cyclic garbage collector off, then collect once."""

    @functools.wraps(run)
    async def phase(*args: P.args, **kwargs: P.kwargs) -> R:
        was_on = gc.isenabled()
        gc.disable()
        try:
            return await run(*args, **kwargs)
        finally:
            if was_on:
                gc.enable()
            gc.collect()

    return phase


@without_gc_pauses
async def closed_loop(host: str, port: int, path: str, bodies: Bodies, count: int,
                      concurrency: int) -> list[Sample]:
    """``count`` requests over ``concurrency`` connections, each as soon as it can."""
    samples: list[Sample] = []
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        connection = await Connection.open(host, port)
        try:
            while next_index < count:
                index, next_index = next_index, next_index + 1
                body, headers = bodies(index)
                sent, started = time.time() * 1000, time.perf_counter()
                status, answer = await connection.post(path.encode(), body, headers)
                samples.append(Sample(index, sent, (time.perf_counter() - started) * 1000,
                                      status, answer))
        finally:
            connection.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples


@without_gc_pauses
async def open_loop(host: str, port: int, path: str, bodies: Bodies, rate: float,
                    duration_s: float, max_connections: int = 512) -> list[Sample]:
    """``rate`` requests a second for ``duration_s``, on schedule; latency counts from
    when each was due, including any wait for a free connection."""
    samples: list[Sample] = []
    idle: list[Connection] = []
    opened = 0
    free = asyncio.Condition()

    async def one(index: int, due: float, due_wall_ms: float) -> None:
        nonlocal opened
        async with free:
            while not idle and opened >= max_connections:
                await free.wait()
            connection = idle.pop() if idle else None
            if connection is None:
                opened += 1
        body, headers = bodies(index)
        late_ms = (time.perf_counter() - due) * 1000
        if connection is not None:
            try:
                status, answer = await connection.post(path.encode(), body, headers)
            except (ConnectionError, asyncio.IncompleteReadError):
                # The server closed it while it sat idle (keep-alive timeout) before
                # reading this request: send it again on a new connection.
                connection.close()
                connection = None
        if connection is None:
            connection = await Connection.open(host, port)
            status, answer = await connection.post(path.encode(), body, headers)
        samples.append(Sample(index, due_wall_ms, (time.perf_counter() - due) * 1000,
                              status, answer, late_ms))
        async with free:
            idle.append(connection)
            free.notify()

    count = int(rate * duration_s)
    start, start_wall_ms = time.perf_counter() + 0.05, time.time() * 1000 + 50
    tasks = []
    for index in range(count):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due, start_wall_ms + index * 1000 / rate)))
    await asyncio.gather(*tasks)
    for connection in idle:
        connection.close()
    return samples
