"""``shopctl bench --abuse``: what hostile or broken clients do to a normal one.

Against the real API (the launcher's, on free ports), while a normal client
keeps asking ``GET /healthz`` and placing orders:

1. ``slow``: N connections that send their headers a byte at a time, never
   finishing (slowloris). The API closes each after ``API_HEADER_TIMEOUT_S``.
2. ``uploads``: three 500 MB bodies at once, declared (Content-Length) and
   streamed (chunked). The API refuses each after at most 64 KiB (413).
3. ``flood``: 20,000 slow connections (this process raises its own open-file
   limit for them, where it may): as many as the API's open-file limit. How
   long the normal client is refused, and whether it gets in again without
   anyone's help once the API has cut the slow ones off.

Reported: the normal client's latencies in each phase, the API's peak RSS,
and the flood's timeline. Nothing is asserted here; the numbers are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import resource
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis.asyncio

from access import tokens
from shop.topology import SHOP
from shopctl import processes
from shopctl.bench.harness import Say, percentiles
from streams.topology import stored_topology

if TYPE_CHECKING:
    from shopctl.bench.run import Bench

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@dataclass
class Probe:
    """The normal client: one request at a time on a fresh connection, with a
    deadline; what it got and how long it took."""

    host: str
    port: int
    order: bytes
    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    async def once(self, kind: str, timeout_s: float = 2.0) -> bool:
        request = HEALTH if kind == "healthz" else self.order
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), timeout_s)
            writer.write(request)
            status = await asyncio.wait_for(reader.readline(), timeout_s)
            writer.close()
            ok = status.split()[1:2] in ([b"200"], [b"202"])
        except (OSError, TimeoutError, asyncio.IncompleteReadError, IndexError):
            ok = False
        if ok:
            self.latencies.setdefault(kind, []).append((time.perf_counter() - started) * 1000)
        else:
            self.failures[kind] = self.failures.get(kind, 0) + 1
        return ok

    async def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await self.once("healthz")
            await self.once("order")
            await asyncio.sleep(0.05)

    def report(self) -> dict[str, Any]:
        found = {kind: percentiles(values) for kind, values in self.latencies.items()}
        return {"latency_ms": found, "failures": dict(self.failures)}


async def slow_connection(host: str, port: int, hold_s: float) -> float | None:
    """Send a request's headers a byte a second; return when the server closed
    the connection (seconds after it opened), None if it never did."""
    opened = time.monotonic()
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return None
    try:
        writer.write(b"POST /orders HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        while time.monotonic() - opened < hold_s:
            try:
                data = await asyncio.wait_for(reader.read(1024), 1.0)
            except TimeoutError:
                writer.write(b"a")
                continue
            if not data:  # closed by the server
                return time.monotonic() - opened
        return None
    except OSError:
        return time.monotonic() - opened
    finally:
        writer.close()


async def upload(host: str, port: int, size: int, chunked: bool, token: bytes) -> dict[str, Any]:
    """Send a ``size``-byte body as fast as the server takes it; what came back."""
    reader, writer = await asyncio.open_connection(host, port)
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: %d" % size
    writer.write(b"POST /orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                 b"\r\nAuthorization: Bearer %s\r\n%s\r\n\r\n" % (token, framing))
    block = b" " * (1 << 20)
    chunk = b"%x\r\n%s\r\n" % (len(block), block)
    sent, status = 0, b""
    reading = asyncio.ensure_future(reader.readline())
    started = time.perf_counter()
    try:
        while sent < size and not reading.done():
            writer.write(chunk if chunked else block)
            await writer.drain()
            sent += len(block)
        status = await asyncio.wait_for(reading, 10)
    except (OSError, TimeoutError):
        if reading.done() and not reading.cancelled() and reading.exception() is None:
            status = reading.result()
    finally:
        reading.cancel()
        writer.close()
    return {"status": status.decode(errors="replace").strip(),
            "sent_before_the_answer_mb": round(sent / 2**20),  # mostly in socket buffers
            "answered_after_s": round(time.perf_counter() - started, 3),
            "framing": "chunked" if chunked else "content-length"}


def _open_file_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def _hold(host: str, port: int, count: int, hold_s: float) -> None:
    """In a process of its own: ``count`` slow connections, until each is cut
    off or ``hold_s`` is over."""
    _open_file_limit()

    async def hold() -> None:
        await asyncio.gather(*(slow_connection(host, port, hold_s) for _ in range(count)))

    asyncio.run(hold())


def _watch(host: str, port: int, started: float, stop: threading.Event,
           timeline: list[tuple[float, bool]]) -> None:
    """GET /healthz every 0.1 s with a 1 s deadline, on blocking sockets; each
    try's time (since ``started``) and whether it was answered."""
    while not stop.is_set():
        ok = False
        try:
            with socket.create_connection((host, port), timeout=1.0) as sock:
                sock.sendall(HEALTH)
                ok = sock.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            pass
        timeline.append((round(time.monotonic() - started, 2), ok))
        stop.wait(0.1)


def api_rss_mb(launcher: int | None) -> dict[str, float | None]:
    pid = processes.children(launcher).get("api") if launcher else None
    if pid is None:
        return {"rss_mb": None, "peak_rss_mb": None}
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    now = next((int(line.split()[1]) / 1024 for line in status if line.startswith("VmRSS:")),
               None)
    return {"rss_mb": round(now, 1) if now else None,
            "peak_rss_mb": round(processes.peak_rss_mb(pid) or 0, 1)}


async def abuse(host: str, port: int, launcher: int | None, token: str, say: Say, *,
                slow: int = 1000, uploads: int = 3, upload_mb: int = 500,
                flood: int = 20_000, header_timeout_s: float = 10.0) -> dict[str, Any]:
    order = (b'POST /orders HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
             b'Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s')
    body = b'{"lines":[{"product_id":"abuse-p","quantity":1}]}'
    results: dict[str, Any] = {}

    def probe() -> Probe:
        return Probe(host, port, order % (token.encode(), len(body), body))

    quiet = probe()
    await quiet.run_for(3)
    results["quiet"] = quiet.report() | api_rss_mb(launcher)
    say(f"abuse      quiet: {results['quiet']}")

    # 1. slow connections, under the API's limits
    hold = header_timeout_s + 5
    held = [asyncio.ensure_future(slow_connection(host, port, hold)) for _ in range(slow)]
    await asyncio.sleep(1)
    busy = probe()
    await busy.run_for(max(0.5, min(header_timeout_s - 1.5, 6)))
    closed = [c for c in await asyncio.gather(*held) if c is not None]
    results["slow"] = busy.report() | api_rss_mb(launcher) | {
        "connections": slow, "closed_by_api": len(closed),
        "closed_after_s": percentiles(closed)}
    say(f"abuse      {slow} slow connections: {results['slow']}")

    # 2. big bodies
    text = token.encode()
    sending = [asyncio.ensure_future(upload(host, port, upload_mb << 20, chunked, text))
               for chunked in (False, True) for _ in range(uploads)]
    busy = probe()
    watcher = asyncio.ensure_future(busy.run_for(3))
    done = await asyncio.gather(*sending)
    await watcher
    results["uploads"] = busy.report() | api_rss_mb(launcher) | {"uploads": done}
    say(f"abuse      {len(done)} uploads of {upload_mb} MB: {results['uploads']}")

    # 3. a flood as large as the API's open-file limit, from processes of its own
    #    (one process can hold no more files than the API can)
    started = time.monotonic()
    watching = threading.Event()
    timeline: list[tuple[float, bool]] = []
    # The normal client in a thread of its own: opening the flood keeps this
    # event loop busy for seconds, and must not delay the client's own tries.
    client = threading.Thread(target=_watch, args=(host, port, started, watching, timeline))
    client.start()
    per_process = _open_file_limit() - 200
    shares = [min(per_process, flood - i) for i in range(0, flood, per_process)]
    senders = [multiprocessing.get_context("fork").Process(
        target=_hold, args=(host, port, share, 2 * header_timeout_s)) for share in shares]
    for sender in senders:
        sender.start()
    peak: dict[str, float | None] = {}
    while any(sender.is_alive() for sender in senders):
        now = api_rss_mb(launcher)
        if (now["rss_mb"] or 0) > (peak.get("rss_mb") or 0):
            peak = now
        await asyncio.sleep(0.5)
    await asyncio.sleep(2)  # after the flood: is the client back?
    watching.set()
    client.join()
    refused = [at for at, ok in timeline if not ok]
    results["flood"] = peak | {
        "connections": flood, "processes": len(senders), "probes": len(timeline),
        "refused_probes": len(refused),
        "first_refused_s": refused[0] if refused else None,
        "last_refused_s": refused[-1] if refused else None,
        "served_after_last_refusal": sum(ok for at, ok in timeline if refused and at >
                                         refused[-1])}
    say(f"abuse      flood of {flood} slow connections: {results['flood']}")
    return results


async def against(bench: Bench) -> dict[str, Any]:
    """The abuse phases (``shopctl bench --abuse``), on a system of their own."""
    import httpx2

    o = bench.options
    with bench.system() as (api_url, redis_url, launcher, data_dir):
        r = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        await bench.authenticate(r, data_dir)
        async with httpx2.AsyncClient(base_url=api_url, headers=bench.operator) as http:
            await http.post("/products", json={"id": "abuse-p", "name": "Abuse",
                                               "price_cents": 1, "stock": 10**9})
            await http.post("/customers", json={"id": "abuse-c", "name": "Abuse",
                                                "email": "a@bench.example",
                                                "balance_cents": 10**12})
        topology = await stored_topology(r, SHOP)
        await tokens.revoke(r, topology, "abuse-c")
        token, _ = await tokens.create(r, topology, "customer", name="abuse-c",
                                       customer_id="abuse-c")
        await r.aclose()  # type: ignore[attr-defined]
        host, port = api_url.removeprefix("http://").rsplit(":", 1)
        bench.results["abuse"] = await abuse(
            host, int(port), launcher, token, bench.say, slow=o.abuse_slow,
            uploads=o.abuse_uploads, upload_mb=o.abuse_upload_mb, flood=o.abuse_flood,
            header_timeout_s=o.abuse_header_timeout_s)
    return bench.results
