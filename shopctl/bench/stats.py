"""What Redis did during a phase: command counts and INFO, of one server or of
every master of a cluster."""

from __future__ import annotations

from typing import Any

import redis.asyncio

from streams.connection import is_cluster


async def infos(r: Any, section: str) -> dict[str, dict[str, Any]]:
    """INFO of the server, or of each master of a cluster, by node."""
    if not is_cluster(r):
        return {"redis": await r.info(section)}
    return dict(await r.info(section, target_nodes=redis.asyncio.RedisCluster.PRIMARIES))


async def reset_stats(r: Any) -> None:
    if is_cluster(r):
        await r.config_resetstat(target_nodes=redis.asyncio.RedisCluster.ALL_NODES)
    else:
        await r.config_resetstat()


async def calls_per_order(r: Any, count: int) -> dict[str, dict[str, float]]:
    """What Redis was asked per order: by command (every master together), and
    on a cluster, by master (all commands)."""
    per_node = await infos(r, "commandstats")
    calls: dict[str, int] = {}
    for stats in per_node.values():
        for name, stat in stats.items():
            calls[name.removeprefix("cmdstat_")] = calls.get(
                name.removeprefix("cmdstat_"), 0) + int(stat["calls"])
    found = {"redis_calls_per_order": {
        name: round(n / count, 2) for name, n in sorted(calls.items(), key=lambda i: -i[1])
        if n >= count / 10}}
    if is_cluster(r):
        found["redis_calls_per_order_by_master"] = {
            node: round(sum(int(stat["calls"]) for stat in stats.values()) / count, 2)
            for node, stats in sorted(per_node.items())}
    return found
