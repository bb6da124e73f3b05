"""Wiring of the status projector process: settings, client, runner."""

from __future__ import annotations

from status_projector.handlers import WORKER
from streams.settings import WorkerSettings
from streams.worker import serve


def main() -> int:
    return serve(WORKER, WorkerSettings())
