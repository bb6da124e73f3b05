"""The gateway process: ``python -m gateway --config FILE`` (or the name of a
bundled configuration: ``legacy-flask.yaml``, ``webhooks.yaml``).

It checks the configuration first (``--check``: only that), then serves each
proxy on its own host and port, runs each subscription's consumer and each
store's forwarding processor, and keeps its endpoints' states in Redis, until
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn

from gateway.config import ConfigError, GatewayConfig, load
from gateway.forwarding import Forwarder, Trim
from gateway.proxy import app_for
from gateway.runtime import STATES_TTL_S, Runtime, store_stream
from gateway.subscriptions import Subscriber
from order_api.server import GuardedHttpTools
from shop import keys
from shop.topology import FORWARDER_GROUP, SHOP
from streams import logs, metrics, recovery, retention, tracing
from streams.connection import connect_async, redacted
from streams.envelope import new_id
from streams.nodes import TRANSIENT
from streams.settings import WorkerSettings
from streams.topology import Topology, check_partitions_async
from streams.worker import connect_when_ready

log = logging.getLogger("gateway")


class EmbeddedServer(uvicorn.Server):
    """uvicorn, several in one process: the gateway handles the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="the configuration (YAML), or a bundled one by name")
    parser.add_argument("--check", action="store_true",
                        help="check the configuration, say what it runs, and exit")
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(f"gateway: {args.config} is a good configuration: {summary(config)}")
        return 0
    settings = WorkerSettings()
    logs.configure(settings.log_format, settings.log_level)
    tracing.configure("gateway")
    measured = settings.metrics and metrics.serve(settings.metrics_port, settings.metrics_host,
                                                  "gateway")
    for chatty in ("httpx", "httpx2"):  # a line per request sent: ours say more
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        asyncio.run(serve(config, settings, measured))
    except OSError as exc:  # a port taken, most likely
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    finally:
        tracing.shutdown()
    return 0


def summary(config: GatewayConfig) -> str:
    parts = [f"proxy {name} on {p.listen} ({len(p.routes)} route(s))"
             for name, p in config.proxies.items()]
    parts += [f"subscription {name} to {', '.join(s.events)}"
              for name, s in config.subscriptions.items()]
    parts += [f"store {name} → {s.endpoint}" for name, s in config.stores.items()]
    return "; ".join(parts) or "nothing to run"


async def serve(config: GatewayConfig, settings: WorkerSettings, measured: bool = False) -> None:
    topology = SHOP.with_partitions(settings.partitions)
    forwarding = [(name, store, tag) for name, store in config.stores.items()
                  for tag in topology.tags()]
    # Each forwarder holds a connection in its blocking read: the proxies get their own.
    redis = connect_async(settings.redis_target, cluster=settings.cluster,
                          max_connections=32 + len(forwarding))
    runtime = Runtime(config, redis, topology)
    await _until_ready(runtime)
    stopping = asyncio.Event()
    client = None
    if config.subscriptions or config.stores:  # the bus's consumers are synchronous
        client = await asyncio.to_thread(connect_when_ready, settings, "gateway",
                                         stopping.is_set)
    servers = [
        EmbeddedServer(uvicorn.Config(app_for(name, proxy, runtime), host=proxy.host,
                                      port=proxy.port, http=GuardedHttpTools, log_config=None,
                                      access_log=False, lifespan="off"))
        for name, proxy in config.proxies.items()]
    loop = asyncio.get_running_loop()
    subscribers = [Subscriber(name, s, runtime, client, settings, loop, measured)
                   for name, s in config.subscriptions.items()]
    owner = f"{socket.gethostname()}-{os.getpid()}-{new_id()[-6:]}"
    trim = _trimmer(client, topology, settings.stream_retention_s)
    forwarders = [Forwarder(runtime, name, store, tag, owner, trim)
                  for name, store, tag in forwarding]
    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(s.serve()) for s in servers]
    tasks += [asyncio.create_task(asyncio.to_thread(s.run)) for s in subscribers]
    tasks += [asyncio.create_task(f.run(stopping)) for f in forwarders]

    def stop(signum: int) -> None:
        log.info("gateway: %s received; stopping", signal.Signals(signum).name)
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop, signum)
    tasks.append(asyncio.create_task(_heartbeat(runtime, stopping)))
    log.info("gateway %s on %s: %s", config.name, redacted(settings.redis_target),
             summary(config))
    waiting = asyncio.create_task(stopping.wait())
    try:
        # Until told to stop, or something ends that should not (a proxy whose
        # port is taken ends at once).
        await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.set()
        for server in servers:
            server.should_exit = True
        for subscriber in subscribers:
            subscriber.stop()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await runtime.aclose()
        await redis.aclose()
        if client is not None:
            client.close()
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed or any(not s.started for s in servers):
        raise OSError(f"a part of the gateway stopped on its own: {failed or 'see above'}")
    log.info("gateway %s stopped", config.name)


def _trimmer(client: Any, topology: Topology, retention_s: float) -> Trim | None:
    """Trim a store's stream as the bus trims its own (``streams.retention``):
    past the retention, never past what is not delivered yet."""
    if client is None:
        return None

    async def trim(stream: str) -> None:
        base = topology.split(stream)[0]
        stores = topology.with_streams({base: (FORWARDER_GROUP,)})
        with contextlib.suppress(*TRANSIENT):
            await asyncio.to_thread(retention.trim, client, stores, [stream], retention_s)

    return trim


async def _until_ready(runtime: Runtime) -> None:
    """Check the partition count and register, waiting out a Redis that is
    down or still loading its data (as a worker does at its start), rather than
    dying with a traceback for the launcher to start again."""
    outage: recovery.Outage | None = None
    while True:
        try:
            await check_partitions_async(runtime.redis, runtime.topology)
            await _register(runtime)
        except TRANSIENT as exc:
            outage = outage or recovery.Outage("gateway", exc)
            await asyncio.sleep(outage.next_delay())
            continue
        if outage:
            outage.over()
        return


async def _register(runtime: Runtime) -> None:
    """Make the stores known to the dead-letter views, and the endpoints to /ops."""
    stores = [store_stream(name) for name in runtime.config.stores]
    if stores:
        await runtime.redis.sadd(keys.gateway_stores(), *stores)
    await runtime.publish()


async def _heartbeat(runtime: Runtime, stopping: asyncio.Event) -> None:
    """Keep the endpoints' states fresh in Redis while the gateway runs."""
    while not stopping.is_set():
        await runtime.publish()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), STATES_TTL_S / 3)
