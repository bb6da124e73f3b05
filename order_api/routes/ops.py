from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from order_api import ops
from order_api.auth import operator
from order_api.deps import RedisDep, TopologyDep
from order_api.errors import Unprocessable
from order_api.schemas import (
    STREAM_PATTERN,
    DeadLetterOut,
    EndpointState,
    Replay,
    ReplayOut,
    StreamHealth,
    answers,
)
from shop.topology import with_gateway_stores
from streams import deadletter

router = APIRouter(prefix="/ops", tags=["operations"], dependencies=[Depends(operator)],
                   responses=answers(401, 403))


@router.get("/streams", response_model=list[StreamHealth])
async def streams(r: RedisDep, topology: TopologyDep) -> list[StreamHealth]:
    """Each stream of each partition, the gateways' stores included: length, groups
    (pending, lag), dead letters (operator)."""
    return await ops.streams(r, await with_gateway_stores(r, topology))


@router.get("/endpoints", response_model=list[EndpointState])
async def endpoints(r: RedisDep) -> list[EndpointState]:
    """The running gateways' endpoints: active or suspended (until when, after how
    many failures, the last error), requests sent and answered (operator)."""
    return await ops.endpoints(r)


@router.get("/dead-letters", response_model=list[DeadLetterOut], responses=answers(422))
async def dead_letters(
    r: RedisDep,
    topology: TopologyDep,
    stream: Annotated[str | None, Query(
        pattern=STREAM_PATTERN,
        description="A stream, e.g. orders.created (every partition) or orders.created{p3} "
        "(one), or its .dead.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[DeadLetterOut]:
    """Dead letters, newest first, of one stream (e.g. orders.created, or a
    gateway's store: gateway.webhooks) or all (operator)."""
    try:
        found = await deadletter.list_dead(
            r, await with_gateway_stores(r, topology, [stream] if stream else []), stream, limit)
    except ValueError as exc:
        raise Unprocessable(f"stream: {exc}") from None
    return [
        DeadLetterOut(ref=s.ref, order_id=s.letter.subject, group=s.letter.group,
                      reason=s.letter.reason, stream=s.letter.stream,
                      entry_id=s.letter.entry_id, deliveries=s.letter.deliveries,
                      failed_at=s.letter.failed_at)
        if s.letter else
        DeadLetterOut(ref=s.ref, order_id="", group="", reason=f"not a dead letter: {s.fields}",
                      stream="", entry_id="", deliveries=0, failed_at="")
        for s in found
    ]


@router.post("/dead-letters/replay", response_model=ReplayOut, responses=answers(413, 415, 422))
async def replay(body: Replay, r: RedisDep, topology: TopologyDep) -> ReplayOut:
    """Put dead letters back on their streams: handlers are idempotent, and a
    store's message is delivered again with its idempotency key (operator)."""
    try:
        return ReplayOut(results=await deadletter.replay(
            r, await with_gateway_stores(r, topology, body.refs), body.refs))
    except ValueError as exc:
        raise Unprocessable(f"refs: {exc}") from None
