"""What operators look at: each stream's length, its consumer groups' pending
entries and lag, and its dead letters."""

from __future__ import annotations

import redis.asyncio

from order_api.schemas import GroupHealth, StreamHealth
from streams.topology import Topology
from streams.topology import dead as dead_of


async def streams(r: redis.asyncio.Redis, topology: Topology) -> list[StreamHealth]:
    """Every stream of the flow, in the order of the flow, partition by partition."""
    names = topology.all_streams()
    async with r.pipeline(transaction=False) as pipe:
        for stream in names:
            pipe.xinfo_stream(stream)
            pipe.xinfo_groups(stream)
            pipe.xlen(dead_of(stream))
        replies = await pipe.execute(raise_on_error=False)
    found = []
    for i, stream in enumerate(names):
        info, groups, dead = replies[3 * i : 3 * i + 3]
        if isinstance(info, redis.ResponseError):  # not created yet
            info, groups = {"length": 0, "last-generated-id": "0-0"}, []
        found.append(StreamHealth(
            name=stream,
            length=info["length"],
            last_id=info["last-generated-id"],
            groups=[
                GroupHealth(name=g["name"], consumers=g["consumers"], pending=g["pending"],
                            lag=g.get("lag"), last_delivered_id=g["last-delivered-id"])
                for g in groups
            ],
            dead_letters=dead if isinstance(dead, int) else 0,
        ))
    return found
