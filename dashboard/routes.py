"""``/dashboard``: the page (no data in it, no token needed to load it), and
``/dashboard/events``, the snapshots as server-sent events (an operator's:
the page sends the token in an ``Authorization`` header, never in the URL)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import redis.exceptions
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, StreamingResponse

from dashboard.snapshot import Board
from order_api.auth import operator
from order_api.errors import NotFound

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
FILES = {"dashboard.js": "text/javascript", "dashboard.css": "text/css"}

router = APIRouter(prefix="/dashboard", tags=["dashboard"])


def board_of(app: Any) -> Board:
    """The app's one board, made on first use (its Redis client exists then)."""
    board = getattr(app.state, "board", None)
    if board is None:
        board = app.state.board = Board(app.state.redis, app.state.topology)
    return board


@router.get("", include_in_schema=False)
async def page() -> FileResponse:
    """The dashboard's page."""
    return FileResponse(STATIC / "index.html", media_type="text/html",
                        headers={"Cache-Control": "no-cache"})


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    if name not in FILES:
        raise NotFound(f"no dashboard file {name!r}")
    return FileResponse(STATIC / name, media_type=FILES[name],
                        headers={"Cache-Control": "no-cache"})


# Not in the OpenAPI document: an endless stream is no request-and-answer.
@router.get("/events", dependencies=[Depends(operator)], include_in_schema=False)
async def events(request: Request) -> StreamingResponse:
    """The dashboard's data as server-sent events: a ``snapshot`` a second
    (the flow, orders by status, recent orders, dead letters, endpoints), or a
    ``problem`` while Redis does not answer (operator)."""
    board = board_of(request.app)

    async def frames() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            try:
                found = await board.snapshot()
            except redis.exceptions.RedisError as exc:
                log.warning("dashboard: no snapshot: %s", exc)
                yield f"event: problem\ndata: {json.dumps({'problem': str(exc)})}\n\n"
            else:
                yield f"event: snapshot\ndata: {json.dumps(found, separators=(',', ':'))}\n\n"
            await asyncio.sleep(board.interval_s)

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
