"""The ceiling the saga is measured against: a bare FastAPI intake endpoint,
served as the API is served, that validates the same order body and does a
single XADD (to ``bench.baseline``, which nothing reads), nothing else.

``python -m shopctl.bench.baseline`` (reads REDIS_URL, API_HOST, API_PORT).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, status

from order_api.main import NO_TELEMETRY
from order_api.schemas import OrderIn
from order_api.server import run_server
from order_api.settings import ApiSettings
from shop import keys
from streams import logs
from streams.connection import connect_async


def create_app(settings: ApiSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = connect_async(
            settings.redis_url, max_connections=settings.api_redis_connections
        )
        gc.freeze()  # as the API does
        yield
        await app.state.redis.aclose()

    app = FastAPI(title="bare intake (benchmark baseline)", lifespan=lifespan,
                  telemetry=NO_TELEMETRY)

    @app.post("/orders", status_code=status.HTTP_202_ACCEPTED)
    async def accept(body: OrderIn, request: Request) -> dict[str, str]:
        """Validate the order and XADD it: the least any intake must do."""
        entry = await request.app.state.redis.xadd(
            keys.BENCH_BASELINE, {"data": body.model_dump_json()}, maxlen=10_000,
            approximate=True,
        )
        return {"entry_id": entry}

    return app


def main() -> int:
    settings = ApiSettings()
    logs.configure(settings.log_format, settings.log_level)
    run_server(create_app(settings), settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
