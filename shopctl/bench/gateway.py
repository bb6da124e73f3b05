"""``shopctl bench --gateway``: what the gateway costs and carries.

- **Legacy order latency**: the real system with ``legacy-flask.yaml``; the
  same walk-in customer orders, one at a time, in pairs: through the proxy
  (``POST :5000/orders``: it places the order and waits for its outcome)
  and directly (``POST /orders``, then ``GET /orders/{id}`` every 20 ms, as
  the proxy does, until the status is final), each first in turn. Both are
  mostly the saga and the 20 ms polls; the proxy's own cost (a hop, the
  validation, the templates) is measured alone on a read: ``GET
  :5001/inventory/item1`` against ``GET /products/item1``.
- **Deliveries per second**: one gateway process forwarding a store,
  filled beforehand, to a local receiver that answers at once; with one
  partition (one processor, strictly in order) and with four.
- **Restart**: a configuration is read at start, there is no reload: what a
  change costs is a restart, measured from the process's start to its
  proxies taking connections.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import redis.asyncio
import uvicorn

from gateway.main import EmbeddedServer
from gateway.runtime import store_stream, stored_fields
from shop.topology import SHOP
from shopctl.bench.harness import process, wait_http
from shopctl.redis_server import free_port
from streams.envelope import new_id

FINAL = {"completed", "refunded", "rejected", "failed"}
STORE_ONLY = """
name: bench
endpoints:
  receiver: {url: "${RECEIVER_URL}", timeout_s: 5, retries: 0}
stores:
  out: {endpoint: receiver, sign: {secret: "a-secret-for-the-benchmark"}}
"""


async def measure(out: Path, say: Callable[[str], Any], orders: int = 150,
                  messages: int = 3000) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="shop-bench-gateway-") as data:
        redis_port, api_port, orders_port, stock_port = (free_port() for _ in range(4))
        args = [sys.executable, "-m", "shopctl", "up", "--data-dir", data, "--redis-port",
                str(redis_port), "--api-port", str(api_port), "--gateway", "legacy-flask.yaml"]
        env = {"LOG_LEVEL": "WARNING", "NO_COLOR": "1",
               "LEGACY_ORDERS_LISTEN": f"127.0.0.1:{orders_port}",
               "LEGACY_INVENTORY_LISTEN": f"127.0.0.1:{stock_port}"}
        with process(args, env):
            api = f"http://127.0.0.1:{api_port}"
            wait_http(f"{api}/readyz", timeout_s=90)
            tokens = Path(data) / "tokens"
            await _wait_port(orders_port)
            say(f"gateway    legacy orders: {orders} through the proxy, {orders} direct, "
                "alternately")
            results["legacy_order_ms"] = await _legacy(
                api, f"http://127.0.0.1:{orders_port}", f"http://127.0.0.1:{stock_port}",
                _token(tokens, "walk-in"), _token(tokens, "operator"), orders)
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            for partitions in (1, 4):
                say(f"gateway    deliveries: {messages} stored messages, {partitions} "
                    "partition(s)")
                results[f"deliveries_{partitions}p"] = await _deliveries(
                    redis_url, partitions, messages)
            results["restart_s"] = _restart(env | {"SHOP_API_URL": api,
                                                   "SHOP_OPERATOR_TOKEN": "x",
                                                   "LEGACY_CUSTOMER_TOKEN": "x",
                                                   "REDIS_URL": redis_url},
                                            free_port(), free_port())
    out.mkdir(parents=True, exist_ok=True)
    (out / "gateway.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def table(results: dict[str, Any]) -> str:
    legacy = results["legacy_order_ms"]

    def row(label: str, spread: dict[str, float]) -> str:
        return f"  {label:<38}{spread['median']:8.1f} ms {spread['p95']:7.1f} ms"

    lines = [
        "gateway                                   median       p95",
        row("legacy order through the proxy", legacy["proxied"]),
        row("the same order, direct + polling", legacy["direct"]),
        f"  {'  added by the proxy (both poll: 20 ms)':<38}{legacy['added_median_ms']:8.1f} ms",
        row("direct POST /orders alone (202)", legacy["accepted"]),
        row("GET :5001/inventory/item1 (proxy)", legacy["read_proxied"]),
        row("GET /products/item1 (direct)", legacy["read_direct"]),
        f"  {'  added by the proxy per request':<38}{legacy['read_added_median_ms']:8.1f} ms",
    ]
    for partitions in (1, 4):
        d = results[f"deliveries_{partitions}p"]
        lines.append(f"  {f'deliveries/s, {partitions} partition(s)':<38}{d['per_s']:8.0f}"
                     f"      ({d['messages']} in {d['seconds']:.2f} s)")
    lines.append(f"  {'restart (a config change): proxies up':<38}{results['restart_s']:8.2f} s")
    return "\n".join(lines)


def _token(folder: Path, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {(folder / who).read_text().strip()}"}


async def _wait_port(port: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {port}") from None
            await asyncio.sleep(0.1)


def _spread(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median": round(statistics.median(ordered), 2),
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 2), "n": len(ordered)}


async def _legacy(api: str, proxy: str, stock: str, customer: dict[str, str],
                  operator: dict[str, str], orders: int) -> dict[str, Any]:
    """Orders and reads, alternately through the proxy and direct."""
    proxied, direct, accepted, read_proxied, read_direct = [], [], [], [], []
    async with httpx2.AsyncClient(timeout=30) as http:
        await http.post(f"{api}/products/item1/adjustments", headers=operator,
                        json={"delta": 2 * orders, "reason": "benchmark"})
        # Which goes first takes turns: the first of a pair finds the workers
        # idle in their blocking reads, the second does not.
        for n in range(2 * orders):
            if n % 4 in (0, 3):
                started = time.perf_counter()
                answer = await http.post(f"{proxy}/orders",
                                         json={"item": "item1", "quantity": 1})
                assert answer.status_code == 201, answer.text
                proxied.append(_ms(started))
                continue
            started = time.perf_counter()
            placed = await http.post(f"{api}/orders", headers=customer, json={
                "lines": [{"product_id": "item1", "quantity": 1}]})
            accepted.append(_ms(started))
            while (await http.get(f"{api}/orders/{placed.json()['id']}",
                                  headers=customer)).json()["status"] not in FINAL:
                await asyncio.sleep(0.02)
            direct.append(_ms(started))
        for _ in range(2 * orders):
            started = time.perf_counter()
            assert (await http.get(f"{stock}/inventory/item1")).status_code == 200
            read_proxied.append(_ms(started))
            started = time.perf_counter()
            assert (await http.get(f"{api}/products/item1", headers=operator)).status_code == 200
            read_direct.append(_ms(started))
    proxied_s, direct_s = _spread(proxied), _spread(direct)
    reads_proxied, reads_direct = _spread(read_proxied), _spread(read_direct)
    return {"proxied": proxied_s, "direct": direct_s, "accepted": _spread(accepted),
            "added_median_ms": round(proxied_s["median"] - direct_s["median"], 2),
            "read_proxied": reads_proxied, "read_direct": reads_direct,
            "read_added_median_ms": round(reads_proxied["median"] - reads_direct["median"], 2)}


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


async def _deliveries(redis_url: str, partitions: int, messages: int) -> dict[str, Any]:
    """One gateway process forwarding ``messages`` stored beforehand."""
    arrived: list[float] = []

    async def receiver(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        arrived.append(time.perf_counter())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    port = free_port()
    server = EmbeddedServer(uvicorn.Config(receiver, host="127.0.0.1", port=port, log_config=None,
                                    access_log=False, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    # A database of its own: the shop's knows one partition count only.
    database = redis_url.rsplit("/", 1)[0] + f"/{2 if partitions == 1 else 3}"
    r = redis.asyncio.Redis.from_url(database, decode_responses=True)
    topology = SHOP.with_partitions(partitions)
    try:
        await r.flushdb()
        await r.set(topology.partitions_key(), partitions)
        async with r.pipeline(transaction=False) as pipe:
            for n in range(messages):
                order = f"ord_{n % 500:016x}"
                pipe.xadd(store_stream("out", topology.tag_of(order)),
                          stored_fields({"order_id": order, "n": n}, order, new_id()))
            await pipe.execute()
        config = Path(tempfile.mkdtemp(prefix="shop-bench-")) / "bench.yaml"
        config.write_text(STORE_ONLY)
        env = {"RECEIVER_URL": f"http://127.0.0.1:{port}", "PARTITIONS": str(partitions),
               "REDIS_URL": database, "LOG_LEVEL": "WARNING"}
        with process([sys.executable, "-m", "gateway", "--config", str(config)], env):
            deadline = time.monotonic() + 120
            while len(arrived) < messages and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        seconds = arrived[-1] - arrived[0] if len(arrived) > 1 else float("nan")
        await r.flushdb()
        return {"messages": len(arrived), "seconds": round(seconds, 3),
                "per_s": round(len(arrived) / seconds, 1) if seconds else 0.0}
    finally:
        await r.aclose()  # type: ignore[attr-defined]
        server.should_exit = True
        await serving


def _restart(env: dict[str, str], orders_port: int, stock_port: int) -> float:
    """From starting ``python -m gateway`` to its proxies taking connections."""
    env = env | {"LEGACY_ORDERS_LISTEN": f"127.0.0.1:{orders_port}",
                 "LEGACY_INVENTORY_LISTEN": f"127.0.0.1:{stock_port}"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "--config", "legacy-flask.yaml"],
                            env=os.environ | env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{stock_port}/nowhere", timeout_s=60)
        wait_http(f"http://127.0.0.1:{orders_port}/nowhere", timeout_s=60)
        return round(time.perf_counter() - started, 2)
    finally:
        proc.terminate()
        proc.wait(30)
