"""One launcher per data folder: an exclusive lock on ``shopctl.lock`` in it."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import IO


class AlreadyRunning(RuntimeError):
    """Another launcher runs on this data folder."""


class DataLock:
    """One launcher per data folder: an exclusive lock on ``shopctl.lock`` in it,
    held as long as the launcher lives (the kernel lets it go when the process
    dies, by SIGKILL too), with what runs where written inside for the next
    one to read."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "shopctl.lock"
        self.file: IO[str] | None = None

    def acquire(self, running: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = self.path.open("a+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            try:
                info = json.loads(file.read() or "{}")
            except ValueError:
                info = {}
            file.close()
            raise AlreadyRunning(
                f"shopctl is already running on {self.path.parent} (pid {info.get('pid', '?')}"
                f", since {info.get('started', '?')}): API on {info.get('api', '?')}, Redis at "
                f"{info.get('redis', '?')}. Stop it (Ctrl-C in its terminal, or kill "
                f"{info.get('pid', 'its pid')}), or give this one another --data-dir"
            ) from None
        file.seek(0)
        file.truncate()
        file.write(json.dumps(running) + "\n")
        file.flush()
        self.file = file

    def release(self) -> None:
        if self.file is not None:
            self.file.close()  # closing lets the lock go
            self.file = None
