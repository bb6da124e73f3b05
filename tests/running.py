"""``shopctl up`` as a subprocess, for the end-to-end and chaos tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from shopctl import processes


class Running:
    """``shopctl up`` in a subprocess, its output collected line by line."""

    def __init__(
        self, data_dir: Path, redis_port: int, api_port: int, *options: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        environ = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_PORT")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shopctl", "up", "--redis-port", str(redis_port),
             "--api-port", str(api_port), "--data-dir", str(data_dir), *options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            # No metrics ports unless a test asks: another shop (yours) may hold 9100.
            env=environ | {"NO_COLOR": "1", "METRICS_PORT": "0"} | (env or {}),
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, "launcher exited:\n" + "\n".join(self.lines)
            assert time.monotonic() < deadline, f"no {text!r} in:\n" + "\n".join(self.lines)
            time.sleep(0.05)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        code = self.proc.wait(60)
        self.reader.join(5)
        return code

    def token(self, who: str) -> str:
        """A demo token the launcher made: ``operator``, ``alice`` or ``bob``."""
        return (self.data_dir / "tokens" / who).read_text().strip()

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(who)}"}

    @property
    def children(self) -> dict[str, int]:
        """The launcher's live child processes: name (payment-1, redis, ...) -> pid."""
        return processes.children(self.proc.pid)
