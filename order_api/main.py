"""The API process: the app, its error answers, and its uvicorn entry point."""

from __future__ import annotations

import gc
import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio
import redis.exceptions
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from pydantic.json_schema import models_json_schema
from starlette.types import ASGIApp, Receive, Scope, Send

from order_api.errors import Conflict, NotFound, Unprocessable
from order_api.routes import customers, health, ops, orders, products
from order_api.schemas import OrderIn
from order_api.settings import ApiSettings
from streams import logs
from streams.autopipeline import AutoPipeline
from streams.connection import connect_async

log = logging.getLogger(__name__)

# FastAPI's built-in OpenTelemetry looks for providers on every request (a
# few percent of the API's CPU); this project does not export telemetry.
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


def create_app(settings: ApiSettings, client: redis.asyncio.Redis | None = None) -> FastAPI:
    """The app; tests pass their own client (fakeredis or a test server)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if client is not None:
            yield
            return
        app.state.redis = connect_async(
            settings.redis_url, max_connections=settings.api_redis_connections
        )
        app.state.intake = AutoPipeline(app.state.redis)
        # Everything built so far (the app, its routes and schemas, the libraries)
        # lives as long as the process: keep the cyclic garbage collector from
        # walking it again and again as requests allocate.
        gc.freeze()
        yield
        await app.state.redis.aclose()

    app = FastAPI(
        title="Redis Streams shop",
        version="0.1.0",
        summary="Orders choreographed over Redis Streams. Money is integer cents; times are UTC.",
        lifespan=lifespan,
        telemetry=NO_TELEMETRY,
    )
    app.router.routes.extend(orders.HOT_ROUTES)  # first: matched before anything else
    for router in (orders.router, products.router, customers.router, ops.router, health.router):
        app.include_router(router)
    _add_error_answers(app)
    _document_hot_routes(app)
    app.state.settings = settings
    if client is not None:
        app.state.redis = client
        app.state.intake = AutoPipeline(client)
    return app


def _document_hot_routes(app: FastAPI) -> None:
    """POST /orders is a plain Starlette route (routes/orders.py), which FastAPI
    does not describe: add it, and the body schema it parses, to OpenAPI."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = default()
            _, definitions = models_json_schema(
                [(OrderIn, "validation")], ref_template="#/components/schemas/{model}"
            )
            spec["components"]["schemas"].update(definitions["$defs"])
            spec["paths"].setdefault("/orders", {})["post"] = orders.PLACE_ORDER_DOCS
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _problem(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


def _add_error_answers(app: FastAPI) -> None:
    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return _problem(404, str(exc))

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return _problem(409, str(exc))

    @app.exception_handler(Unprocessable)
    async def unprocessable(_: Request, exc: Unprocessable) -> JSONResponse:
        return _problem(422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"] if p != "body") or "body"
            problems.append(f"{where}: {err['msg']}")
        return JSONResponse(
            {"detail": "; ".join(problems), "errors": jsonable_errors(exc)}, status_code=422
        )

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unreachable: %s", exc)
        return _problem(503, "the data store is unreachable; try again shortly", **{
            "Retry-After": "1"
        })


def jsonable_errors(exc: RequestValidationError) -> list[dict[str, object]]:
    return [
        {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]} for err in exc.errors()
    ]


class HotPath:
    """ASGI in front of the app: POST /orders, the hot path, goes straight to its
    handler, past FastAPI's middleware stack and router (measured: 0.20 -> 0.17 ms
    of API CPU per order). Its errors get the app's own answers; anything else
    goes to the app."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/orders" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app
        request = Request(scope, receive, send)
        try:
            response = await orders.place_order(request)
        except Exception as exc:
            answer = next((self.app.exception_handlers[kind] for kind in type(exc).__mro__
                           if kind in self.app.exception_handlers), None)
            if answer is None:
                raise
            answered = answer(request, exc)
            response = await answered if inspect.isawaitable(answered) else answered
        await response(scope, receive, send)


def run_server(app: ASGIApp, settings: ApiSettings) -> None:
    """Serve ``app`` as the API is served (the benchmark's baseline uses it too):
    uvicorn with uvloop and httptools when installed, no access log."""
    uvicorn.run(
        app,
        host=settings.api_host,
        port=settings.api_port,
        loop="auto",
        http="auto",
        log_config=None,  # our handler, our format
        access_log=False,
    )


def main() -> int:
    settings = ApiSettings()
    logs.configure(settings.log_format, settings.log_level)
    run_server(HotPath(create_app(settings)), settings)
    return 0
