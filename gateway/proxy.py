"""Proxies: inbound HTTP routes that mediate a foreign request into the shop.

A route's ``in`` sequence shapes the request; its ``target`` (an endpoint)
is called with the message; its ``out`` sequence shapes the answer. A
``respond`` anywhere answers at once; a fault (a mediator that could not do
its part, an endpoint that did not answer) runs the route's ``fault``
sequence (else the proxy's), with ``error`` set; what it does not answer is
a 502 ``{"error": ...}``. Each proxy listens on its own host and port, with
the API's limits on slow requests and headers, and a body over
``max_body_bytes`` refused (413) without reading past it.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route as StarletteRoute
from starlette.types import ASGIApp

from gateway.config import Proxy, Route
from gateway.message import Drop, Fault, Message, Respond
from gateway.runtime import Runtime
from gateway.steps import run_steps

log = logging.getLogger("gateway")


def app_for(name: str, proxy: Proxy, runtime: Runtime) -> ASGIApp:
    """The proxy as an ASGI app."""
    routes = [StarletteRoute(route.path, _handler(name, proxy, route, runtime),
                             methods=[route.method]) for route in proxy.routes]

    async def not_found(request: Request, _exc: Exception) -> Response:
        return JSONResponse({"error": "Not found"}, 404)

    async def not_allowed(request: Request, _exc: Exception) -> Response:
        return JSONResponse({"error": "Method not allowed"}, 405)

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})


def _handler(name: str, proxy: Proxy, route: Route, runtime: Runtime) -> Any:
    async def handle(request: Request) -> Response:
        started = time.perf_counter()
        answer = await _mediate(proxy, route, runtime, request)
        log.info("gateway      %s %s %s → %d (%.0f ms)", name, request.method, request.url.path,
                 answer.status_code, (time.perf_counter() - started) * 1000)
        return answer

    return handle


class _TooLarge(Exception):  # noqa: N818
    pass


async def _body(request: Request, limit: int) -> bytes:
    """The body, refused past ``limit`` bytes: before a byte is read when its
    length says so, else as it streams."""
    if int(request.headers.get("content-length") or 0) > limit:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _mediate(proxy: Proxy, route: Route, runtime: Runtime, request: Request) -> Response:
    try:
        raw = await _body(request, proxy.max_body_bytes)
    except _TooLarge:
        return JSONResponse({"error": f"the body is over {proxy.max_body_bytes} bytes"}, 413,
                            headers={"Connection": "close"})
    message = Message(params=dict(request.path_params), query=dict(request.query_params),
                      headers={})
    try:
        message.body = json.loads(raw) if raw else None
    except ValueError as exc:
        message.error, message.failed = f"the body is not JSON: {exc}", "request"
        return await _fault(proxy, route, runtime, message)
    message.request = {"method": request.method, "path": request.url.path,
                       "body": message.body, "headers": dict(request.headers)}
    try:
        await run_steps(route.in_, message, runtime)
        if route.target:
            target = route.target
            context = message.context()
            path = (str(target.path.render(context)) if target.path is not None
                    else request.url.path + (f"?{request.url.query}" if request.url.query else ""))
            body = message.body if target.body is None else target.body.render(context)
            method = target.method or route.method
            try:
                message.status, message.body, message.headers = await runtime.send(
                    target.endpoint, method, path, None if method in ("GET", "DELETE") else body,
                    {})
            except Fault as exc:
                exc.mediator = "target"
                raise
        await run_steps(route.out, message, runtime)
    except Respond as answer:
        return _answer(answer.status, answer.body, answer.headers)
    except Drop:
        return Response(status_code=204)
    except Fault as exc:
        message.error, message.failed = str(exc), exc.mediator
        return await _fault(proxy, route, runtime, message)
    return _answer(message.status or 200, message.body, {})


async def _fault(proxy: Proxy, route: Route, runtime: Runtime, message: Message) -> Response:
    runtime.log.warning("gateway      fault: %s", message.error)
    try:
        await run_steps(route.fault if route.fault is not None else proxy.fault, message, runtime)
    except Respond as answer:
        return _answer(answer.status, answer.body, answer.headers)
    except Drop:
        return Response(status_code=204)
    except Fault as exc:
        message.error = f"{message.error}; then, in the fault sequence: {exc}"
    return _answer(502, {"error": message.error}, {})


def _answer(status: int, body: Any, headers: dict[str, str]) -> Response:
    if body is None:
        return Response(status_code=status, headers=headers)
    return JSONResponse(body, status, headers=headers)
