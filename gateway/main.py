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
import signal
import sys
from collections.abc import Iterator
from typing import Any

import uvicorn

from gateway.config import ConfigError, GatewayConfig, load
from gateway.proxy import app_for
from gateway.runtime import STATES_TTL_S, Runtime, store_stream
from order_api.server import GuardedHttpTools
from shop import keys
from shop.topology import SHOP
from streams import logs
from streams.connection import connect_async, redacted
from streams.settings import Settings
from streams.topology import check_partitions_async

log = logging.getLogger("gateway")


class _Server(uvicorn.Server):
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
    settings = Settings()
    logs.configure(settings.log_format, settings.log_level)
    for chatty in ("httpx", "httpx2"):  # a line per request sent: ours say more
        logging.getLogger(chatty).setLevel(logging.WARNING)
    try:
        asyncio.run(serve(config, settings))
    except OSError as exc:  # a port taken, most likely
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    return 0


def summary(config: GatewayConfig) -> str:
    parts = [f"proxy {name} on {p.listen} ({len(p.routes)} route(s))"
             for name, p in config.proxies.items()]
    parts += [f"subscription {name} to {', '.join(s.events)}"
              for name, s in config.subscriptions.items()]
    parts += [f"store {name} → {s.endpoint}" for name, s in config.stores.items()]
    return "; ".join(parts) or "nothing to run"


async def serve(config: GatewayConfig, settings: Settings) -> None:
    redis = connect_async(settings.redis_target, cluster=settings.cluster, max_connections=32)
    topology = SHOP.with_partitions(settings.partitions)
    await check_partitions_async(redis, topology)
    runtime = Runtime(config, redis, topology)
    await _register(runtime)
    servers = [
        _Server(uvicorn.Config(app_for(name, proxy, runtime), host=proxy.host, port=proxy.port,
                               http=GuardedHttpTools, log_config=None, access_log=False,
                               lifespan="off"))
        for name, proxy in config.proxies.items()]
    tasks: list[asyncio.Task[Any]] = [asyncio.create_task(s.serve()) for s in servers]
    stopping = asyncio.Event()

    def stop(signum: int) -> None:
        log.info("gateway: %s received; stopping", signal.Signals(signum).name)
        stopping.set()
        for server in servers:
            server.should_exit = True

    loop = asyncio.get_running_loop()
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
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await runtime.aclose()
        await redis.aclose()
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed or any(not s.started for s in servers):
        raise OSError(f"a proxy could not start or stopped on its own: {failed or 'see above'}")
    log.info("gateway %s stopped", config.name)


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
