"""Runs the whole system in one terminal, each line prefixed by its process.

Order of start: Redis (unless REDIS_URL names your own; with ``--cluster``, a
local Redis Cluster, unless REDIS_CLUSTER_URL names your own), the API, the
projector, the workers, then demo data through the API. Once the system is
ready the launcher supervises it: a process that dies (a crash, ``kill -9``)
is started again after a short backoff, the embedded Redis included (from its
AOF), and each node of the local cluster: a replica at once, a master once
its replica has taken its slots over (so that it comes back as a replica of
the new master, never with less than the cluster confirmed), or after three
node timeouts if none did. Ctrl-C (or SIGTERM) stops the API and workers
first, each finishing the batch in hand, and Redis last, so nothing is cut
off mid-step.
"""

from __future__ import annotations

import functools
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import IO, Any

from access import demo as demo_tokens
from shopctl import demo, processes
from shopctl.cluster import ClusterError, LocalCluster, masters_at
from shopctl.datalock import AlreadyRunning, DataLock
from shopctl.redis_server import PortInUse, RedisServer, port_is_free, wait_until_ready
from shopctl.settings import LauncherSettings
from streams.connection import redacted

# What the launcher gives a gateway it starts: the API's URL, the demo operator's
# token, the demo walk-in customer's (gateway/configs/legacy-flask.yaml), and a
# secret to sign webhooks with (gateway/configs/webhooks.yaml) unless one is set.
GIVEN_TO_GATEWAY = ("SHOP_API_URL", "SHOP_OPERATOR_TOKEN", "LEGACY_CUSTOMER_TOKEN",
                    "WEBHOOK_SECRET")
COLORS = ("36", "33", "35", "32", "34", "31", "96", "93")
# A process that dies is started again after this, doubling while it keeps
# dying within STABLE_S of its start, up to RESTART_BACKOFF_MAX_S.
RESTART_BACKOFF_S = 0.5
RESTART_BACKOFF_MAX_S = 10.0
STABLE_S = 30.0


@dataclass
class Child:
    name: str
    module: str
    env: dict[str, str] = field(repr=False)
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen | None = None
    pump: threading.Thread | None = field(default=None, repr=False)
    started_at: float = 0.0
    restart_at: float | None = None  # set when it died and waits to be started again
    backoff_s: float = RESTART_BACKOFF_S


def describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


class Launcher:
    def __init__(self, settings: LauncherSettings, out: IO[str] = sys.stdout) -> None:
        self.settings = settings
        self.out = out
        self.color = out.isatty() and not os.environ.get("NO_COLOR")
        # Set by the signal handlers. A plain flag, not a threading.Event, whose
        # set() can deadlock in a handler that interrupts the Event's own wait().
        self.stop_requested = False
        self.print_lock = threading.Lock()
        self.redis: RedisServer | None = None
        self.cluster: LocalCluster | None = None
        self.gateway: Any = None  # the gateway's configuration, once checked
        self.children: list[Child] = []
        self.metrics_ports: dict[str, int] = {}  # each worker's, as given
        self.lock = DataLock(settings.data_dir.resolve())

    @property
    def on_cluster(self) -> bool:
        return self.settings.cluster or bool(self.settings.redis_cluster_url)

    @property
    def redis_url(self) -> str:
        s = self.settings
        if s.redis_cluster_url:
            return s.redis_cluster_url
        if s.cluster:
            return f"redis://127.0.0.1:{s.redis_cluster_port}"
        return s.redis_url or f"redis://127.0.0.1:{s.redis_port}/0"

    @functools.cached_property
    def partitions(self) -> int:
        """PARTITIONS as given; else 1, or 4 per master on a cluster."""
        s = self.settings
        if s.partitions is not None:
            return s.partitions
        if s.redis_cluster_url:
            return 4 * (len(masters_at(s.redis_cluster_url)) or 1)
        return 4 * s.cluster_masters if s.cluster else 1

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    def say(self, name: str, line: str) -> None:
        width = 11
        prefix = f"{name:<{width}}|"
        if self.color:
            code = COLORS[sum(map(ord, name.split("-")[0])) % len(COLORS)]
            prefix = f"\x1b[{code}m{prefix}\x1b[0m"
        with self.print_lock:
            self.out.write(f"{prefix} {line.rstrip()}\n")
            self.out.flush()

    def run(self) -> int:
        """Start everything, wait for Ctrl-C or a crash, stop everything."""
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)
        code = 0
        try:
            self.lock.acquire({
                "pid": os.getpid(), "api": self.api_url, "redis": redacted(self.redis_url),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        except AlreadyRunning as exc:
            self.say("shopctl", f"error: {exc}")
            return 1
        try:
            self.start()
            code = self.watch()
        except (PortInUse, TimeoutError, RuntimeError, ClusterError) as exc:
            self.say("shopctl", f"error: {exc}")
            code = 1
        finally:
            code = self.shutdown() or code
            self.lock.release()
        return code

    def _request_stop(self, _signum: int, _frame: object) -> None:
        self.stop_requested = True

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self.stop_requested and time.monotonic() < deadline:
            time.sleep(0.05)

    def start(self) -> None:
        s = self.settings
        if s.gateway:
            self.check_gateway()
        if not port_is_free(s.api_port, s.api_host):
            raise PortInUse(
                f"port {s.api_port} is already in use, so the API cannot start: "
                "set API_PORT to a free port"
            )
        if s.redis_cluster_url:
            self.say("shopctl", f"using your Redis Cluster at {redacted(s.redis_cluster_url)}")
        elif s.cluster:
            self.start_cluster()
        elif s.redis_url:
            self.say("shopctl", f"using your Redis at {redacted(s.redis_url)}")
            wait_until_ready(s.redis_url)
        else:
            data = s.data_dir.resolve() / "redis"
            self.say("shopctl", f"starting the embedded Redis on 127.0.0.1:{s.redis_port} "
                                f"(data in {data}, AOF on, fsync {s.redis_appendfsync})")
            self.redis = RedisServer(
                s.redis_port, data, appendfsync=s.redis_appendfsync,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                start_new_session=True,
            )
            self.redis.start()
            self._pump("redis", self.redis.proc)
        env = os.environ | {
            "API_HOST": s.api_host,
            "API_PORT": str(s.api_port),
            "API_AUTH": str(s.api_auth).lower(),
            "PARTITIONS": str(self.partitions),
            "PYTHONUNBUFFERED": "1",
        }
        if self.cluster:  # every node: a process starting while one is down finds another
            env["REDIS_CLUSTER_URL"] = "redis://" + ",".join(
                f"127.0.0.1:{port}" for port in self.cluster.ports)
        elif self.on_cluster:
            env["REDIS_CLUSTER_URL"] = self.redis_url
        else:
            env["REDIS_URL"] = self.redis_url
            env.pop("REDIS_CLUSTER_URL", None)
        env.pop("METRICS_PORT", None)  # the launcher's: each child is given its own
        self._spawn("api", "order_api", env)
        for i in range(1, s.projectors + 1):
            name = "projector" if s.projectors == 1 else f"projector-{i}"
            self._spawn(name, "status_projector", env | self._worker_env(name))
        for i in range(1, s.payment_workers + 1):
            self._spawn(f"payment-{i}", "payment_worker", env | self._worker_env(f"payment-{i}"))
        for i in range(1, s.inventory_workers + 1):
            self._spawn(f"inventory-{i}", "inventory_worker",
                        env | self._worker_env(f"inventory-{i}"))
        self._wait_for_api()
        if self.stop_requested:  # Ctrl-C while starting
            return
        if s.api_auth:
            found = demo.seed(self.api_url, self.redis_url, s.data_dir, records=s.demo_data,
                              cluster=self.on_cluster,
                              say=lambda line: self.say("demo", line))
        else:
            found = {}
            if s.demo_data:
                for line in demo.load(self.api_url, None):
                    self.say("demo", line)
        if found:
            where = demo_tokens.folder(s.data_dir)
            self.say("shopctl", f"tokens (kept in {where}; use as 'Authorization: Bearer "
                                "<token>'):")
            for who, token in found.items():
                self.say("shopctl", f"  {who:<9} {token}")
        else:
            self.say("shopctl", "authentication is OFF (--no-auth): anyone who reaches "
                                f"{self.api_url} may do anything")
        if s.gateway:
            self.start_gateway(env, found)
        redis_at = (f"Redis Cluster at {redacted(self.redis_url)} ({self.partitions} "
                    "partitions)" if self.on_cluster else f"Redis at {redacted(self.redis_url)}")
        if self.metrics_ports:
            self.say("shopctl", f"metrics: {self.api_url}/metrics, and "
                     + ", ".join(f"{name} :{port}" for name, port in self.metrics_ports.items())
                     + " (/metrics on each)")
        self.say("shopctl", f"ready: API on {self.api_url} (docs at {self.api_url}/docs, "
                            f"live dashboard at {self.api_url}/dashboard), "
                            f"{redis_at}. Ctrl-C stops everything.")

    def _worker_env(self, name: str) -> dict[str, str]:
        """A worker's name, and its own metrics port (the next one in turn)."""
        env = {"WORKER_NAME": name}
        if self.settings.metrics_port:
            port = self.metrics_ports.setdefault(
                name, self.settings.metrics_port + len(self.metrics_ports))
            env["METRICS_PORT"] = str(port)
        return env

    def check_gateway(self) -> None:
        """The gateway's configuration, checked before anything starts: its
        errors, and its proxies' ports."""
        from gateway.config import ConfigError, load

        assert self.settings.gateway is not None
        # What the launcher gives the gateway is not known yet: stand-ins for the check.
        given = (dict.fromkeys(GIVEN_TO_GATEWAY, "a-stand-in-for-what-the-launcher-gives")
                 | {"SHOP_API_URL": self.api_url})
        try:
            self.gateway = load(self.settings.gateway, os.environ | given)
        except ConfigError as exc:
            raise RuntimeError(f"the gateway's configuration: {exc}") from None
        for name, proxy in self.gateway.proxies.items():
            if not port_is_free(proxy.port, proxy.host):
                raise PortInUse(f"port {proxy.port} is already in use, so the gateway's proxy "
                                f"{name} cannot listen on {proxy.listen}: set the variable its "
                                "`listen:` names to a free host:port")

    def start_gateway(self, env: dict[str, str], tokens: dict[str, str]) -> None:
        """The gateway, with the shop's URL and the demo tokens it may use."""
        from gateway.config import ConfigError, load

        assert self.settings.gateway is not None and self.gateway is not None
        given = {"SHOP_API_URL": self.api_url}
        if "operator" in tokens:
            given["SHOP_OPERATOR_TOKEN"] = tokens["operator"]
        if "walk-in" in tokens:
            given["LEGACY_CUSTOMER_TOKEN"] = tokens["walk-in"]
        if "WEBHOOK_SECRET" not in env:
            given["WEBHOOK_SECRET"] = self._webhook_secret()
        try:
            load(self.settings.gateway, env | given)
        except ConfigError as exc:
            raise RuntimeError(f"the gateway cannot start: {exc} (the launcher gives it "
                               f"{', '.join(given)}; the demo data, and its tokens, give more)"
                               ) from None
        self._spawn("gateway", "gateway", env | given | self._worker_env("gateway"),
                    ["--config", self.settings.gateway])
        self._wait_for_gateway()
        proxies = ", ".join(f"{name} on http://{p.listen}"
                            for name, p in self.gateway.proxies.items())
        self.say("shopctl", f"gateway {self.gateway.name}: {proxies or 'no proxy'}"
                            + (f"; stores {', '.join(self.gateway.stores)}"
                               if self.gateway.stores else ""))

    def start_cluster(self) -> None:
        s = self.settings
        data = s.data_dir.resolve() / "cluster"
        nodes = s.cluster_masters * (1 + s.cluster_replicas)
        last = s.redis_cluster_port + nodes - 1
        self.say("shopctl", f"starting a local Redis Cluster on 127.0.0.1:{s.redis_cluster_port}"
                            f"-{last} ({s.cluster_masters} masters, {s.cluster_replicas} "
                            f"replica(s) each; data in {data}, AOF on, fsync "
                            f"{s.redis_appendfsync})")
        self.cluster = LocalCluster(
            s.redis_cluster_port, data, masters=s.cluster_masters,
            replicas=s.cluster_replicas, partitions=self.partitions,
            node_timeout_ms=s.cluster_node_timeout_ms, appendfsync=s.redis_appendfsync,
            port_setting="REDIS_CLUSTER_PORT (--cluster-port)", stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        try:
            self.cluster.start(say=lambda line: self.say("cluster", line))
        finally:
            for node in self.cluster.nodes:
                if node.proc is not None:
                    self._pump(f"redis-{node.port}", node.proc)
        self.say("cluster", f"healthy: masters on {', '.join(map(str, self.cluster.masters_now()))}"
                            f"; {self.partitions} partitions, "
                            f"redis-cli -c -p {s.redis_cluster_port} to look")

    def _spawn(self, name: str, module: str, env: dict[str, str],
               args: list[str] | None = None) -> None:
        child = Child(name, module, env, args or [])
        self._start(child)
        self.children.append(child)

    def _start(self, child: Child) -> None:
        child.proc = processes.start_tied(
            [sys.executable, "-m", child.module, *child.args],
            env=child.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops them in order
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        child.pump = self._pump(child.name, child.proc)

    def _pump(self, name: str, proc: subprocess.Popen | None) -> threading.Thread:
        def copy() -> None:
            assert proc is not None and proc.stdout is not None
            for line in proc.stdout:
                self.say(name, line)

        thread = threading.Thread(target=copy, name=f"pump-{name}", daemon=True)
        thread.start()
        return thread

    def _wait_for_api(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self.stop_requested:
            try:
                with urllib.request.urlopen(f"{self.api_url}/readyz", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            self._check_children()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API did not become ready within {timeout_s:.0f}s")
            self._pause(0.1)

    def _webhook_secret(self) -> str:
        """The secret the gateway signs webhooks with, made once and kept (the
        owner's only) beside the demo tokens."""
        path = demo_tokens.folder(self.settings.data_dir) / "webhook-secret"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            demo_tokens.write_secret(path, secrets.token_urlsafe(32))
        return path.read_text().strip()

    def _wait_for_gateway(self, timeout_s: float = 30.0) -> None:
        """Until each of the gateway's proxies takes connections."""
        deadline = time.monotonic() + timeout_s
        waiting = [(p.host, p.port) for p in self.gateway.proxies.values()]
        while waiting and not self.stop_requested:
            try:
                socket.create_connection(waiting[0], timeout=1).close()
                waiting.pop(0)
                continue
            except OSError:
                pass
            self._check_children()
            if time.monotonic() > deadline:
                raise TimeoutError(f"the gateway's proxy on {waiting[0][0]}:{waiting[0][1]} did "
                                   f"not take connections within {timeout_s:.0f}s")
            self._pause(0.1)

    def _check_children(self) -> None:
        for child in self.children:
            if child.proc and child.proc.poll() is not None:
                raise RuntimeError(f"{child.name} exited with code {child.proc.returncode}")
        if self.redis and self.redis.proc and self.redis.proc.poll() is not None:
            raise RuntimeError(f"redis exited with code {self.redis.proc.returncode}")
        for node in self.cluster.nodes if self.cluster else []:
            if node.proc and node.proc.poll() is not None:
                raise RuntimeError(f"redis-{node.port} exited with code {node.proc.returncode}")

    def watch(self) -> int:
        """Supervise until Ctrl-C: start again whatever dies."""
        while not self.stop_requested:
            self._pause(0.2)
            self._supervise()
        self.say("shopctl", "stopping: API and workers first, then Redis")
        return 0

    def _supervise(self) -> None:
        now = time.monotonic()
        if self.cluster:
            for port, proc in self.cluster.restart_dead(now, lambda line: self.say("shopctl",
                                                                                   line)):
                self._pump(f"redis-{port}", proc)
        if self.redis and self.redis.proc and self.redis.proc.poll() is not None:
            self.say("shopctl", f"redis {describe_exit(self.redis.proc.returncode)}; "
                                "starting it again from its AOF")
            try:
                self.redis.start()
                self._pump("redis", self.redis.proc)
                self.say("shopctl", "redis is back; the workers reconnect by themselves")
            except (PortInUse, TimeoutError, RuntimeError) as exc:
                self.say("shopctl", f"redis could not start again: {exc}; retrying")
        for child in self.children:
            if child.proc is None or (code := child.proc.poll()) is None:
                continue
            if child.restart_at is None:
                if now - child.started_at > STABLE_S:
                    child.backoff_s = RESTART_BACKOFF_S
                self.say("shopctl", f"{child.name} {describe_exit(code)}; "
                                    f"starting it again in {child.backoff_s:.1f}s")
                child.restart_at = now + child.backoff_s
                child.backoff_s = min(child.backoff_s * 2, RESTART_BACKOFF_MAX_S)
            elif now >= child.restart_at:
                if child.pump:
                    child.pump.join(1)
                self._start(child)
                self.say("shopctl", f"{child.name} started again (pid {child.proc.pid})")

    def shutdown(self) -> int:
        """Stop the children, then Redis; return 1 if any child exited badly."""
        code = 0
        for child in self.children:
            if child.proc and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in self.children:
            if child.proc is None or child.restart_at is not None:  # dead, and said so
                continue
            try:
                child.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.say("shopctl", f"{child.name} did not stop in 15s; killing it")
                child.proc.kill()
                child.proc.wait()
            if child.pump:
                child.pump.join(2)
            if child.proc.returncode not in (0, -signal.SIGTERM):
                self.say("shopctl", f"{child.name} exited with code {child.proc.returncode}")
                code = 1
        if self.redis:
            self.redis.stop()
        if self.cluster:
            self.cluster.stop()
        self.say("shopctl", "stopped")
        return code
