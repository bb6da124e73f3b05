"""What operators look at: each stream's length, its consumer groups' pending
entries and lag, and its dead letters; the gateways' endpoints."""

from __future__ import annotations

import json
import logging

import redis.asyncio
from pydantic import ValidationError

from order_api.schemas import EndpointState, GroupHealth, StreamHealth
from shop import keys
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
            entries_added=info.get("entries-added", info["length"]),
            last_id=info["last-generated-id"],
            groups=[
                GroupHealth(name=g["name"], consumers=g["consumers"], pending=g["pending"],
                            lag=g.get("lag"), last_delivered_id=g["last-delivered-id"])
                for g in groups
            ],
            dead_letters=dead if isinstance(dead, int) else 0,
        ))
    return found


async def endpoints(r: redis.asyncio.Redis) -> list[EndpointState]:
    """Each running gateway's endpoints, as the gateways keep them in Redis
    (``keys.gateway_endpoints``; gone when no gateway has refreshed them for
    30 s), by gateway and endpoint."""
    found = []
    for name, raw in sorted((await r.hgetall(keys.gateway_endpoints())).items()):
        gateway, _, endpoint = name.partition("/")
        try:
            state = json.loads(raw)
            found.append(EndpointState.model_validate(state | {"gateway": gateway,
                                                               "endpoint": endpoint}))
        except (ValueError, TypeError, ValidationError) as exc:
            logging.getLogger(__name__).warning("endpoint state %s unreadable: %s", name, exc)
    return found
