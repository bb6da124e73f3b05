"""The benchmark: how fast the whole saga settles orders, against the ceiling
of a bare intake endpoint on the same machine.

Phases, each printed as it ends:

1. ``loadgen``: the load generator against a server that does nothing: its
   own ceiling, so that nobody mistakes it for the system's.
2. ``baseline``: a bare FastAPI endpoint, served as the API is, that
   validates the order body and does one XADD (``shopctl.bench.baseline``).
3. ``saturation``: N orders into the real system as fast as it accepts them
   (closed loop); accepted/s, settled/s (until the last order is final), and
   the POST and POST-to-final latencies.
4. ``steady``: a fixed rate (half the saturation's settled/s unless given)
   for a fixed time, open loop: latencies count from when each order was due.
5. ``runner``: the consumer runner alone, events/s in one process, with a
   no-op handler and with the real payment handler.

Then saturation and steady again on a system without authentication; on one
with metrics off (``METRICS=false``) and one with tracing on too, its spans
exported over OTLP/HTTP to a local sink (``shopctl.bench.otlp_sink``): what
metrics and traces cost; and on a system of each further partition count
(``--partitions``), the last of them also with two replicas of each worker;
steady at the first system's rate.

POST-to-final is the time from sending the order to the projector marking it
final, by the same machine's clock (the order's ``updated_ms``).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis.asyncio

from access import tokens
from shop import keys
from shop.statuses import FINAL_STATUSES
from shop.topology import SHOP
from shopctl import processes
from shopctl.bench import loadgen, runner
from shopctl.bench.harness import (
    CUSTOMERS,
    PRODUCTS,
    Options,
    Say,
    order_bodies,
    percentiles,
    process,
    wait_http,
)
from shopctl.bench.stats import calls_per_order, infos, reset_stats
from shopctl.redis_server import free_port
from streams.connection import connect_async
from streams.topology import stored_topology


async def backlog(r: redis.asyncio.Redis) -> dict[str, int]:
    """Each group's messages not yet read plus read and not yet acknowledged,
    by ``stream/group`` (of every partition)."""
    behind: dict[str, int] = {}
    for stream in (await stored_topology(r, SHOP)).all_streams():
        try:
            groups = await r.xinfo_groups(stream)
        except redis.RedisError:  # not created yet, or Redis busy restarting
            continue
        for g in groups:
            behind[f"{stream}/{g['name']}"] = (g.get("lag") or 0) + g["pending"]
    return behind


class Bench:
    def __init__(self, options: Options, say: Say) -> None:
        self.options, self.say = options, say
        self.max_lag: dict[str, int] = {}
        self.watching = False
        self.series: dict[str, list[float]] = {}  # latencies (ms) for the chart
        self.results: dict[str, Any] = {"options": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()
            if k != "token"}}
        self.bodies = order_bodies(None)
        self.operator: dict[str, str] = {}  # the operator's Authorization header

    # -- the phases ------------------------------------------------------------

    async def loadgen_ceiling(self) -> None:
        port = free_port()
        with process([sys.executable, "-m", "shopctl.bench.noop", str(port)]):
            wait_http(f"http://127.0.0.1:{port}/")
            count = max(self.options.orders, 2000)
            started = time.perf_counter()
            samples = await loadgen.closed_loop("127.0.0.1", port, "/", self.bodies, count,
                                                self.options.concurrency)
            elapsed = time.perf_counter() - started
        self.record("loadgen", {"requests": count, "requests_per_s": round(count / elapsed),
                                "latency_ms": percentiles([s.latency_ms for s in samples])})

    async def baseline(self, redis_url: str) -> None:
        port = free_port()
        env = {"REDIS_URL": redis_url, "API_PORT": str(port), "LOG_LEVEL": "WARNING"}
        with process([sys.executable, "-m", "shopctl.bench.baseline"], env):
            wait_http(f"http://127.0.0.1:{port}/docs")
            await self.warm_up(port, "/orders")
            count = self.options.orders
            started = time.perf_counter()
            samples = await loadgen.closed_loop("127.0.0.1", port, "/orders", self.bodies, count,
                                                self.options.concurrency)
            elapsed = time.perf_counter() - started
        bad = [s.status for s in samples if s.status != 202]
        assert not bad, f"the baseline refused orders: {bad[:5]}"
        self.series["baseline: POST"] = [s.latency_ms for s in samples]
        self.record("baseline", {"orders": count, "accepted_per_s": round(count / elapsed),
                                 "post_ms": percentiles([s.latency_ms for s in samples])})

    async def warm_up(self, port: int, path: str) -> None:
        """A tenth of the run first, unmeasured: connections, caches, scripts."""
        await loadgen.closed_loop("127.0.0.1", port, path, self.bodies,
                                  max(100, self.options.orders // 10), self.options.concurrency)

    async def saturation(self, host: str, port: int, r: redis.asyncio.Redis) -> float:
        count = self.options.orders
        await self.warm_up(port, "/orders")
        await self.wait_settled(r)
        await reset_stats(r)
        finals_before = await self.finals_count(r)
        rewrites_before = await self.aof_rewrites(r)
        cpu_before = self.cpu()
        lag = self.watch_lag(r)
        started = time.perf_counter()
        samples = await loadgen.closed_loop(host, port, "/orders", self.bodies, count,
                                            self.options.concurrency)
        accepted = time.perf_counter() - started
        finals = await self.wait_final(r, samples, finals_before)
        await self.stop_watching(lag)
        cpu_after = self.cpu()
        first_sent = min(s.sent_ms for s in samples)
        settled_s = (max(finals.values()) - first_sent) / 1000
        self.series["saturation: POST"] = [s.latency_ms for s in samples]
        self.series["saturation: POST to final"] = self.to_final(samples, finals)
        phase = {
            "orders": count,
            "accepted_per_s": round(count / accepted),
            "settled_per_s": round(count / settled_s),
            "post_ms": percentiles(self.series["saturation: POST"]),
            "post_to_final_ms": percentiles(self.series["saturation: POST to final"]),
            "max_lag": dict(self.max_lag),
            "aof_rewrites": await self.aof_rewrites(r) - rewrites_before,
            # What Redis was asked, per order (reads of the lag sampler included).
            **await calls_per_order(r, count),
            # Where the CPU goes: CPU ms each process spent per order settled.
            "cpu_ms_per_order": {
                name: round((cpu_after[name] - cpu_before[name]) * 1000 / count, 3)
                for name in sorted(cpu_after) if name in cpu_before
            },
        }
        self.record("saturation", phase)
        return count / settled_s

    async def steady(self, host: str, port: int, r: redis.asyncio.Redis, rate: float) -> None:
        await self.wait_settled(r)
        await reset_stats(r)
        finals_before = await self.finals_count(r)
        rewrites_before = await self.aof_rewrites(r)
        cpu_before = self.cpu()
        lag = self.watch_lag(r)
        samples = await loadgen.open_loop(host, port, "/orders", self.bodies, rate,
                                          self.options.duration_s)
        finals = await self.wait_final(r, samples, finals_before)
        await self.stop_watching(lag)
        cpu_after = self.cpu()
        self.series["steady: POST"] = [s.latency_ms for s in samples]
        self.series["steady: POST to final"] = self.to_final(samples, finals)
        self.record("steady", {
            "rate_per_s": round(rate, 1),
            "duration_s": self.options.duration_s,
            "orders": len(samples),
            "post_ms": percentiles(self.series["steady: POST"]),
            "post_to_final_ms": percentiles(self.series["steady: POST to final"]),
            "sender_late_ms": percentiles([s.late_ms for s in samples]),
            "max_lag": dict(self.max_lag),
            "aof_rewrites": await self.aof_rewrites(r) - rewrites_before,
            # Below saturation, where the processes do not fight for the cores:
            # what each costs per order, idle polling included.
            "cpu_ms_per_order": {
                name: round((cpu_after[name] - cpu_before[name]) * 1000 / len(samples), 3)
                for name in sorted(cpu_after) if name in cpu_before
            },
            **await calls_per_order(r, len(samples)),
        })

    # -- helpers -----------------------------------------------------------------

    launcher: int | None = None

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each process of the system and by this one."""
        used = {"bench (load generator)": time.process_time()}
        if self.launcher is not None:
            for name, pid in processes.children(self.launcher).items():
                if (seconds := processes.cpu_seconds(pid)) is not None:
                    used[name] = seconds
        return used

    def watch_lag(self, r: redis.asyncio.Redis) -> asyncio.Task:
        """Sample every group's lag + pending four times a second; keep the worst.
        Stopped by a flag, not by cancelling: redis-py can turn a cancellation
        that lands inside a command into a TimeoutError."""
        self.max_lag, self.watching = {}, True

        async def watch() -> None:
            while self.watching:
                for name, behind in (await backlog(r)).items():
                    self.max_lag[name] = max(self.max_lag.get(name, 0), behind)
                await asyncio.sleep(0.25)

        return asyncio.create_task(watch())

    async def stop_watching(self, task: asyncio.Task) -> None:
        self.watching = False
        await task

    async def wait_settled(self, r: redis.asyncio.Redis, timeout_s: float = 120) -> None:
        """Until no group has anything unread or pending (the warm-up settled)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not sum((await backlog(r)).values()):
                return
            await asyncio.sleep(0.05)
        raise TimeoutError("the warm-up orders did not settle")

    @staticmethod
    async def aof_rewrites(r: redis.asyncio.Redis) -> int:
        """How many times Redis has rewritten its append-only file (a fork, and
        a child competing for the cores: the latency tail's usual cause)."""
        return sum(int(info.get("aof_rewrites", 0))
                   for info in (await infos(r, "persistence")).values())

    async def finals_count(self, r: redis.asyncio.Redis) -> int:
        shop = await stored_topology(r, SHOP)
        async with r.pipeline(transaction=False) as pipe:
            for status in FINAL_STATUSES:
                for tag in shop.tags():
                    pipe.zcard(keys.orders_by_status(status, tag))
            return sum(await pipe.execute())

    async def wait_final(self, r: redis.asyncio.Redis, samples: list[loadgen.Sample],
                         finals_before: int, timeout_s: float = 300) -> dict[str, float]:
        """When each order became final (ms), once all are. Waits on the count of
        final orders (four ZCARDs a poll, not one read per order, so that the
        waiting takes no CPU from the system), then reads each order once."""
        bad = [(s.status, s.body[:200]) for s in samples if s.status != 202]
        assert not bad, f"orders refused: {bad[:3]}"
        ids = [json.loads(s.body)["id"] for s in samples]
        deadline = time.monotonic() + timeout_s
        shop = await stored_topology(r, SHOP)
        while True:
            if await self.finals_count(r) >= finals_before + len(ids):
                async with r.pipeline(transaction=False) as pipe:
                    for order_id in ids:
                        pipe.hmget(keys.order(order_id, shop.tag_of(order_id)), "status",
                                   "updated_ms")
                    rows = await pipe.execute()
                if all(status in FINAL_STATUSES for status, _ in rows):
                    return {oid: float(ms) for oid, (_, ms) in zip(ids, rows, strict=True)}
            if time.monotonic() > deadline:
                raise TimeoutError("orders did not settle")
            await asyncio.sleep(0.01)

    @staticmethod
    def to_final(samples: list[loadgen.Sample], finals: dict[str, float]) -> list[float]:
        return [finals[json.loads(s.body)["id"]] - s.sent_ms for s in samples]

    def record(self, phase: str, values: dict[str, Any]) -> None:
        self.results[phase] = values
        shown = ", ".join(f"{k} {v}" for k, v in values.items() if not isinstance(v, dict))
        self.say(f"{phase:<11} {shown}")

    # -- the whole run -----------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        o = self.options
        if o.cluster:
            from shopctl.bench.cluster import compare

            return await compare(self, o.rounds)
        first = [] if o.api_url else ["--partitions", str(o.partitions[0])]
        with self.system(*first) as (api_url, redis_url, launcher, data_dir):
            r, host, port = await self.open(api_url, redis_url, launcher, data_dir)
            await self.loadgen_ceiling()
            await self.baseline(redis_url)
            memory_before = (await r.info("memory"))["used_memory"]
            settled_per_s = await self.saturation(host, port, r)
            rate = o.rate or settled_per_s / 2
            await self.steady(host, port, r, rate)
            memory_after = (await r.info("memory"))["used_memory"]
            settled = o.orders + self.results["steady"]["orders"]
            self.results["redis_bytes_per_order"] = round((memory_after - memory_before) / settled)
            if launcher is not None:
                self.results["peak_rss_mb"] = {
                    name: round(mb, 1) for name, pid in sorted(processes.children(launcher).items())
                    if (mb := processes.peak_rss_mb(pid)) is not None
                }
            await r.aclose()  # type: ignore[attr-defined]
        if o.compare_auth and not o.api_url:
            await self.without_auth(rate)
        if o.compare_telemetry and not o.api_url:
            await self.telemetry(rate)
        if not o.api_url:
            await self.partition_sweep(rate)
        self.results["peak_rss_mb"] = self.results.get("peak_rss_mb", {}) | {
            "bench (load generator)": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                            / 1024, 1)}
        self.results["runner"] = runner.measure(o.runner_events, self.say)
        baseline = self.results["baseline"]["accepted_per_s"]
        self.results["ratio_settled_to_baseline"] = round(
            self.results["saturation"]["settled_per_s"] / baseline, 2)
        return self.results

    async def without_auth(self, rate: float) -> None:
        """Saturation and steady (at the same rate) again, on a fresh system that
        checks no token, the load generator sending no header: the cost of
        authentication is the difference."""
        with_auth = {phase: self.results[phase] for phase in ("saturation", "steady")}
        self.say("without authentication (shopctl up --no-auth), the same phases:")
        first = ["--partitions", str(self.options.partitions[0])]
        with self.system("--no-auth", *first) as (api_url, redis_url, launcher, _):
            r, host, port = await self.open(api_url, redis_url, launcher, None, authenticated=False)
            await self.saturation(host, port, r)
            await self.steady(host, port, r, rate)
            await r.aclose()  # type: ignore[attr-defined]
        self.results["without_auth"] = {
            phase: self.results[phase] for phase in ("saturation", "steady")}
        self.results.update(with_auth)

    async def telemetry(self, rate: float) -> None:
        """Saturation and steady (at the same rate) on fresh systems, one after
        the other: metrics off, the default (metrics on, tracing off), metrics
        and tracing on (every hop a span, exported over OTLP/HTTP to a local
        sink), and tracing with one trace in ten sampled: ``results["telemetry"]``.
        The default is measured again here, beside the others, rather than
        taken from the first system: a system started minutes earlier ran on a
        machine that has drifted since."""
        from shopctl.bench import otlp_sink

        measured = {phase: self.results[phase] for phase in ("saturation", "steady")}
        found: dict[str, Any] = {}
        first = ["--partitions", str(self.options.partitions[0])]
        with otlp_sink.running() as (endpoint, sink):
            sampled = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                       "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                       "OTEL_TRACES_SAMPLER_ARG": "0.1"}
            systems = [("metrics off", {"METRICS": "false"}),
                       ("metrics on, tracing off (the default)", {}),
                       ("metrics and tracing on", {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}),
                       ("tracing on, 1 trace in 10 sampled", sampled)]
            for label, env in systems:
                before = (sink.requests, sink.bytes)
                self.say(f"{label}"
                         + (f" ({', '.join(f'{k}={v}' for k, v in env.items())})" if env else "")
                         + ", the same phases:")
                with self.system(*first, env=env) as (api_url, redis_url, launcher, data_dir):
                    r, host, port = await self.open(api_url, redis_url, launcher, data_dir)
                    await self.saturation(host, port, r)
                    await self.steady(host, port, r, rate)
                    await r.aclose()  # type: ignore[attr-defined]
                found[label] = {phase: self.results[phase] for phase in ("saturation", "steady")}
                if "OTEL_EXPORTER_OTLP_ENDPOINT" in env:
                    found[label]["otlp_exports"] = {
                        "requests": sink.requests - before[0],
                        "mb": round((sink.bytes - before[1]) / 1e6, 1)}
        self.results["telemetry"] = found
        self.results.update(measured)

    async def partition_sweep(self, rate: float) -> None:
        """Saturation and steady (at ``rate``) on a fresh system of each further
        partition count, and on the last with two replicas of each worker (each
        replica reads every partition): ``results["partitions"]``, by label."""
        measured = {phase: self.results[phase] for phase in ("saturation", "steady")}
        counts = self.options.partitions
        sweep = {f"{counts[0]} partition(s)": measured}
        systems = [(f"{n} partition(s)", ["--partitions", str(n)]) for n in counts[1:]]
        replicas = ["--payment-workers", "2", "--inventory-workers", "2", "--projectors", "2"]
        systems.append((f"{counts[-1]} partition(s), 2 replicas of each worker",
                        ["--partitions", str(counts[-1]), *replicas]))
        for label, args in systems:
            self.say(f"{label}, the same phases:")
            with self.system(*args) as (api_url, redis_url, launcher, data_dir):
                r, host, port = await self.open(api_url, redis_url, launcher, data_dir)
                await self.saturation(host, port, r)
                await self.steady(host, port, r, rate)
                await r.aclose()  # type: ignore[attr-defined]
            sweep[label] = {phase: self.results[phase] for phase in ("saturation", "steady")}
        self.results["partitions"] = sweep
        self.results.update(measured)

    async def open(
        self, api_url: str, redis_url: str, launcher: int | None, data_dir: Path | None,
        authenticated: bool = True,
    ) -> tuple[redis.asyncio.Redis, str, int]:
        """Ready a system for the phases: its catalog, and the customers'
        tokens (none with ``authenticated=False``, for a system started with
        --no-auth); return a Redis client, and the API's host and port."""
        self.launcher = launcher
        r = self.client(redis_url)
        if authenticated:
            await self.authenticate(r, data_dir)
        else:
            self.operator = {}
        await self.load_catalog(api_url)
        self.bodies = order_bodies(await self.customer_tokens(r))
        host, port = api_url.removeprefix("http://").rsplit(":", 1)
        return r, host, int(port)

    def client(self, redis_url: str) -> Any:
        """A client of the system's Redis: its server, or its cluster."""
        return connect_async(redis_url, cluster=self.on_cluster, max_connections=16)

    on_cluster = False  # whether the system in hand runs on a cluster

    async def authenticate(self, r: redis.asyncio.Redis, data_dir: Path | None) -> None:
        """The operator's token: the one the launcher made, or the one given."""
        token = self.options.token
        if token is None:
            where = (data_dir or Path(".data")) / "tokens" / "operator"
            deadline = time.monotonic() + (30 if data_dir else 0)
            while not where.is_file() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # the launcher writes it once the API is up
            token = where.read_text().strip() if where.is_file() else None
        if token is not None:
            self.operator = {"Authorization": f"Bearer {token}"}

    async def customer_tokens(self, r: redis.asyncio.Redis) -> dict[str, str] | None:
        """A token per bench customer (made anew each run, revoked by name first)."""
        if not self.operator:
            return None
        made = {}
        topology = await stored_topology(r, SHOP)
        for i in range(CUSTOMERS):
            name = f"bench-c{i}"
            await tokens.revoke(r, topology, name)
            made[name] = (await tokens.create(r, topology, "customer", name=name,
                                              customer_id=name))[0]
        return made

    async def load_catalog(self, api_url: str) -> None:
        import httpx2

        o = self.options
        demand = 2 * o.orders + int((o.rate or 4000) * o.duration_s)
        stock = demand // PRODUCTS // (2 if o.scarce else 1) + 1
        async with httpx2.AsyncClient(base_url=api_url, headers=self.operator) as http:
            for i in range(PRODUCTS):
                answer = await http.post("/products", json={
                    "id": f"bench-p{i}", "name": f"Bench product {i}", "price_cents": 100,
                    "stock": stock})
                if answer.status_code == 409:  # a running system: top it up
                    await http.post(f"/products/bench-p{i}/restock", json={"quantity": stock})
            for i in range(CUSTOMERS):
                await http.post("/customers", json={
                    "id": f"bench-c{i}", "name": f"Bench customer {i}",
                    "email": f"c{i}@bench.example", "balance_cents": 10**12})

    @contextmanager
    def system(self, *extra: str, cluster_port: int | None = None,
               env: dict[str, str] | None = None,
               ) -> Iterator[tuple[str, str, int | None, Path | None]]:
        """The system under test: its API, its Redis, the launcher's pid and its
        data folder (None for a running system); with ``cluster_port``, on a
        local cluster whose first node is there."""
        o = self.options
        self.on_cluster = cluster_port is not None
        if o.api_url:
            yield o.api_url.rstrip("/"), o.redis_url or "redis://127.0.0.1:6379/0", None, None
            return
        redis_port, api_port = free_port(), free_port()
        if cluster_port is not None:
            extra = ("--cluster", "--cluster-port", str(cluster_port), *extra)
        with tempfile.TemporaryDirectory(prefix="shop-bench-") as data:
            args = [sys.executable, "-m", "shopctl", "up", "--no-demo", "--data-dir", data,
                    "--redis-port", str(redis_port), "--api-port", str(api_port),
                    *o.launcher_args, *extra]
            # Metrics on free ports: a shop of yours may hold 9100 and up.
            given = {"LOG_LEVEL": o.log_level, "NO_COLOR": "1",
                     "METRICS_PORT": str(free_port())} | (env or {})
            with process(args, given) as launcher:
                api_url = f"http://127.0.0.1:{api_port}"
                wait_http(f"{api_url}/readyz", timeout_s=90)
                self.say(f"system     API {api_url}, Redis on port {redis_port}, "
                         f"{' '.join([*o.launcher_args, *extra]) or 'one worker of each kind'}, "
                         f"LOG_LEVEL={o.log_level}"
                         + "".join(f", {k}={v}" for k, v in (env or {}).items()))
                url = (f"redis://127.0.0.1:{cluster_port}" if cluster_port is not None else
                       f"redis://127.0.0.1:{redis_port}/0")
                yield api_url, url, launcher.pid, Path(data)
