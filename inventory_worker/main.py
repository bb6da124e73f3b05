"""Wiring of the inventory worker process: settings, client, runner."""

from __future__ import annotations

from inventory_worker.handlers import WORKER
from streams.settings import WorkerSettings
from streams.worker import serve


def main() -> int:
    return serve(WORKER, WorkerSettings())
