"""The HTTP answer of every error: a JSON ``detail`` that says what is wrong
and what to do (and for a validation error, each field), never a stack trace.
The domain errors (``order_api.errors``) become their status here, and
nowhere deeper."""

from __future__ import annotations

import logging

import redis.exceptions
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from order_api import openapi
from order_api.errors import (
    Conflict,
    Forbidden,
    NotFound,
    OutcomeUnknown,
    Unauthorized,
    Unavailable,
    Unprocessable,
)

log = logging.getLogger(__name__)


def _problem(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


def install(app: FastAPI) -> None:
    """Every error the app can meet, as its JSON answer."""

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

    @app.exception_handler(Unavailable)
    async def not_now(_: Request, exc: Unavailable) -> JSONResponse:
        return _problem(503, str(exc), **{"Retry-After": "1"})

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
        if exc.status_code == 405:  # Starlette names the methods of one route: name them all
            headers["Allow"] = ", ".join(openapi.methods_of(app, request.url.path))
            detail = f"{request.method} is not allowed here; allowed: {headers['Allow']}"
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
    # A cluster with a slot that has no master now (a failover under way).
    @app.exception_handler(redis.exceptions.ClusterError)
    @app.exception_handler(redis.exceptions.TryAgainError)
    @app.exception_handler(redis.exceptions.RedisClusterException)
    async def unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("redis unreachable: %s", exc)
        return _problem(503, "the data store is unreachable and nothing was done; try again "
                             "shortly", **{"Retry-After": "1"})


def jsonable_errors(exc: RequestValidationError) -> list[dict[str, object]]:
    return [
        {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]} for err in exc.errors()
    ]
