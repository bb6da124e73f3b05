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
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.telemetry import TelemetryConfig
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.middleware.body_limit import RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from order_api import catalog
from order_api.errors import (
    Conflict,
    Forbidden,
    NotFound,
    OutcomeUnknown,
    Unauthorized,
    Unprocessable,
)
from order_api.guard import RequestGuard
from order_api.routes import customers, health, me, ops, orders, products
from order_api.schemas import OrderIn
from order_api.server import run_server
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
        if not settings.api_auth:
            log.warning("authentication is OFF (API_AUTH=false): whoever reaches "
                        "%s:%d may do anything", settings.api_host, settings.api_port)
        if client is None:
            app.state.redis = connect_async(
                settings.redis_url, max_connections=settings.api_redis_connections,
                timeout_s=settings.api_redis_timeout_s,
            )
            app.state.intake = AutoPipeline(app.state.redis)
        try:
            if added := await catalog.index_customers(app.state.redis):
                log.info("indexed %d customer(s) created before the index", added)
        except redis.exceptions.RedisError as exc:
            log.warning("could not index older customers (again at the next start): %s", exc)
        if client is not None:
            yield
            return
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
        max_body_size=settings.api_max_body_bytes,
    )
    if settings.cors_origins:  # closed unless an allow-list is set
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_credentials=False,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
            expose_headers=["Location", "Idempotent-Replayed", "Retry-After"],
        )
    app.router.routes.extend(orders.HOT_ROUTES)  # first: matched before anything else
    for router in (orders.router, products.router, customers.router, ops.router, me.router,
                   health.router):
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
            spec["paths"].setdefault("/orders", {})["post"] = orders.PLACE_ORDER_DOCS | {
                "responses": orders.PLACE_ORDER_DOCS["responses"] | _documented(
                    orders.PLACE_ORDER_ERRORS, spec)}
        return app.openapi_schema  # type: ignore[return-value]

    app.openapi = openapi  # type: ignore[method-assign]


def _documented(errors: dict[int | str, dict[str, Any]], spec: dict[str, Any]) -> dict[str, Any]:
    """Error answers of ``schemas.answers`` as OpenAPI response objects, their
    models added to the document's schemas."""
    models = [info["model"] for info in errors.values()]
    _, definitions = models_json_schema([(m, "serialization") for m in models],
                                        ref_template="#/components/schemas/{model}")
    spec["components"]["schemas"].update(definitions.get("$defs", {}))
    return {str(code): {"description": info["description"], "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{info['model'].__name__}"}}}}
        for code, info in errors.items()}


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
        return JSONResponse({"detail": str(exc), "errors": []}, status_code=422)

    @app.exception_handler(Unauthorized)
    async def unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        challenge = 'Bearer error="invalid_token"' if exc.invalid_token else "Bearer"
        return _problem(401, str(exc), **{"WWW-Authenticate": challenge})

    @app.exception_handler(Forbidden)
    async def forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return _problem(403, str(exc))

    @app.exception_handler(OutcomeUnknown)
    async def unknown(_: Request, exc: OutcomeUnknown) -> JSONResponse:
        location = f"/orders/{exc.order_id}"
        return JSONResponse({
            "detail": f"the data store did not confirm the order in time ({exc}): it may have "
                      f"been placed, or may still be. Do not place it again: GET {location} "
                      "shows it once it is placed, or send the same request with the same "
                      "Idempotency-Key, which returns the order if it was placed and places "
                      "it if it was not",
            "outcome": "unknown", "order_id": exc.order_id, "location": location,
        }, status_code=504, headers={"Location": location})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        headers = dict(exc.headers or {})
        detail = exc.detail
        if exc.status_code == 413:  # the body is left unread: don't read it for the next one
            limit = request.app.state.settings.api_max_body_bytes
            detail = (f"the body is over {limit} bytes "
                      "(API_MAX_BODY_BYTES); it was not read")
            headers["Connection"] = "close"
        return JSONResponse({"detail": detail}, status_code=exc.status_code,
                            headers=headers or None)

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
        return _problem(503, "the data store is unreachable and nothing was done; try again "
                             "shortly", **{"Retry-After": "1"})


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
        # The body limit of the app, as Starlette applies it, for the route it skips.
        self.limited = RequestBodyLimitMiddleware(self._place_order, app.state.settings
                                                  .api_max_body_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/orders" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app
        await self.limited(scope, receive, send)

    async def _place_order(self, scope: Scope, receive: Receive, send: Send) -> None:
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


def asgi(app: FastAPI) -> ASGIApp:
    """The app as it is served: the request guard (Host, JSON bodies) in front of
    the hot path in front of FastAPI. Tests wrap their app in it too."""
    settings = app.state.settings
    return RequestGuard(HotPath(app), settings.trusted_hosts, settings.api_max_body_bytes)


def main() -> int:
    settings = ApiSettings()
    logs.configure(settings.log_format, settings.log_level)
    run_server(asgi(create_app(settings)), settings)
    return 0
