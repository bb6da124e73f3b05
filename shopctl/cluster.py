"""A real Redis Cluster on this machine: masters and replicas of the same
server binary the embedded Redis is (``shopctl.redis_server``), on
127.0.0.1, each with its data, its AOF and its ``nodes.conf`` in a folder of
its own (``<data>/cluster/<port>``).

A new cluster is formed the way ``redis-cli --cluster create`` forms one
(slots to the masters, MEET, REPLICATE), with one difference: the slots are
cut so that the shop's partitions are spread evenly over the masters. A
partition lives in the slot of its hash tag (``{p3}``); cut evenly by slot
count, 12 partitions fall 3, 3 and 6 on three masters. Started again, the
nodes read their ``nodes.conf`` and the cluster is what it was, failovers
included.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from shopctl.redis_server import PortInUse, RedisServer, port_is_free

SLOTS = 16384
BUS_OFFSET = 10_000  # a node's cluster bus listens on its port + 10000


def free_base(count: int = 6) -> int:
    """A first port with ``count`` free ports after it, and their bus ports
    (for a throwaway cluster: the benchmark's, the tests')."""
    for _ in range(200):
        base = random.randint(20_000, 40_000)
        if all(port_is_free(p) and port_is_free(p + BUS_OFFSET)
               for p in range(base, base + count)):
            return base
    raise PortInUse(f"found no {count} free ports in a row between 20000 and 40000")


def partition_slots(partitions: int) -> list[int]:
    """The slot of each partition's hash tag (``{p0}``, ``{p1}``, ...)."""
    return [key_slot(f"{{p{p}}}".encode()) for p in range(partitions)]


def spread(partitions: int, masters: int) -> list[tuple[int, int]]:
    """Slot ranges (first, last), one per master, covering every slot, cut so
    that each master serves as many partitions as another (give or take one):
    each cut halfway between the last partition slot of one master and the
    first of the next. With fewer partitions than masters, an even cut."""
    if partitions < masters:
        size = SLOTS // masters
        cuts = [size * (m + 1) - 1 for m in range(masters - 1)]
    else:
        slots = sorted(partition_slots(partitions))
        sizes = [partitions // masters + (1 if m < partitions % masters else 0)
                 for m in range(masters)]
        cuts, at = [], 0
        for size in sizes[:-1]:
            at += size
            cuts.append((slots[at - 1] + slots[at]) // 2)
    firsts = [0, *(cut + 1 for cut in cuts)]
    lasts = [*cuts, SLOTS - 1]
    return list(zip(firsts, lasts, strict=True))


@dataclass(frozen=True)
class Node:
    """One line of CLUSTER NODES."""

    id: str
    port: int
    master: bool
    failed: bool
    master_id: str | None
    slots: tuple[tuple[int, int], ...]


def nodes_of(client: redis.Redis) -> list[Node]:
    """The cluster as one node sees it."""
    found = []
    for line in client.execute_command("CLUSTER", "NODES").splitlines():
        parts = line.split()
        flags = parts[2].split(",")
        ranges = []
        for part in parts[8:]:
            if part.startswith("["):
                continue  # a slot being migrated
            first, _, last = part.partition("-")
            ranges.append((int(first), int(last or first)))
        found.append(Node(parts[0], int(parts[1].split("@")[0].rsplit(":", 1)[1]),
                          "master" in flags, "fail" in flags or "fail?" in flags,
                          None if parts[3] == "-" else parts[3], tuple(ranges)))
    return found


class ClusterError(RuntimeError):
    """The cluster could not be formed or did not become healthy; says why."""


Address = tuple[str, int]


def node_client(address: Address, password: str | None = None,
                timeout_s: float = 2.0) -> redis.Redis:
    host, port = address
    # No retries of its own: the callers poll, and a wrong password fails at once.
    return redis.Redis(host=host, port=port, password=password, decode_responses=True,
                       socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry=None)


def cluster_info(address: Address, password: str | None = None) -> dict[str, Any]:
    """CLUSTER INFO of one node ({} when it does not answer)."""
    try:
        with node_client(address, password) as c:
            text = c.execute_command("CLUSTER", "INFO")
    except redis.RedisError:
        return {}
    info: dict[str, Any] = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        info[name] = int(value) if value.isdigit() else value
    return info


def until(done: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise ClusterError(f"gave up waiting {timeout_s:.0f}s for {what}")
        time.sleep(0.05)


def form(addresses: Sequence[Address], masters: int, partitions: int,
         password: str | None = None) -> None:
    """Form a cluster of new nodes, as ``redis-cli --cluster create`` does, but
    with the slots cut so that the partitions spread evenly over the masters
    (``spread``): the first ``masters`` addresses are the masters, the others
    their replicas, in turn."""
    heads, tails = list(addresses[:masters]), list(addresses[masters:])
    for epoch, (address, (first, last)) in enumerate(
            zip(heads, spread(partitions, masters), strict=True), start=1):
        with node_client(address, password) as c:
            c.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
            c.execute_command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
    with node_client(addresses[0], password) as c:
        for host, port in addresses[1:]:  # MEET takes an IP address
            c.execute_command("CLUSTER", "MEET", socket.gethostbyname(host), port)
    until(lambda: all(cluster_info(a, password).get("cluster_known_nodes") == len(addresses)
                      for a in addresses), "every node to know every other")
    ids = {}
    for address in heads:
        with node_client(address, password) as c:
            ids[address] = c.execute_command("CLUSTER", "MYID")
    for i, address in enumerate(tails):
        master = heads[i % masters]
        # A node learns of the others' roles through the bus: retried until it has.
        until(partial(_replicate, address, ids[master], password),
              f"{address[0]}:{address[1]} to become a replica of {master[0]}:{master[1]}")


def _replicate(address: Address, master_id: str, password: str | None) -> bool:
    try:
        with node_client(address, password) as c:
            c.execute_command("CLUSTER", "REPLICATE", master_id)
        return True
    except redis.ResponseError:
        return False


def form_if_new(addresses: Sequence[Address], masters: int, partitions: int,
                password: str | None = None, say: Callable[[str], None] = lambda _: None,
                where: str = "") -> bool:
    """Form the cluster if every node is new (True), or find it formed (False);
    then wait until every node says cluster_state:ok."""
    known = [cluster_info(a, password).get("cluster_known_nodes") for a in addresses]
    if all(k == 1 for k in known):
        say(f"forming a new cluster: {masters} masters, "
            f"{len(addresses) // masters - 1} replica(s) each, {partitions} partitions "
            "spread over the masters")
        form(addresses, masters, partitions, password)
    elif any(k != len(addresses) for k in known):
        raise ClusterError(
            f"the nodes{where} know {known} nodes each, not {len(addresses)}: a cluster of "
            "another shape, or one half formed (or a node that does not answer)")
    until(lambda: all(cluster_info(a, password).get("cluster_state") == "ok"
                      for a in addresses), "cluster_state:ok on every node", 60)
    return all(k == 1 for k in known)


class LocalCluster:
    """``masters`` masters and ``replicas`` replicas of each, on the ports from
    ``first_port`` on (masters first)."""

    def __init__(
        self, first_port: int, data_dir: Path, *, masters: int = 3, replicas: int = 1,
        partitions: int | None = None, node_timeout_ms: int = 3000, aof: bool = True,
        appendfsync: str = "everysec", port_setting: str = "REDIS_CLUSTER_PORT", **popen: Any,
    ) -> None:
        self.first_port = first_port
        self.masters, self.replicas = masters, replicas
        self.partitions = partitions or 4 * masters
        self.node_timeout_ms = node_timeout_ms
        self.data_dir = Path(data_dir)
        self.port_setting = port_setting
        self.nodes = [
            RedisServer(port, self.data_dir / str(port), aof=aof, appendfsync=appendfsync,
                        cluster_node_timeout_ms=node_timeout_ms, **popen)
            for port in self.ports
        ]
        self.dead_since: dict[int, float] = {}  # dead nodes, by port (restart_dead)

    @property
    def ports(self) -> list[int]:
        return [self.first_port + i for i in range(self.masters * (1 + self.replicas))]

    @property
    def url(self) -> str:
        """Any node's URL: the cluster's, for a cluster client."""
        return f"redis://127.0.0.1:{self.first_port}"

    def client(self, port: int, timeout_s: float = 2.0) -> redis.Redis:
        return node_client(("127.0.0.1", port), timeout_s=timeout_s)

    # -- starting ----------------------------------------------------------------

    def start(self, say: Callable[[str], None] = lambda _: None) -> LocalCluster:
        """Start every node, form the cluster if it is new, and wait until it is
        healthy: every slot served, every replica in sync."""
        for port in self.ports:
            for taken in (port, port + BUS_OFFSET):
                if not port_is_free(taken):
                    raise PortInUse(
                        f"port {taken} is already in use, so node {port} of the cluster "
                        f"cannot start (it needs {port} and its bus port {port + BUS_OFFSET}): "
                        f"set {self.port_setting} to a first port with "
                        f"{len(self.ports)} free ports after it (and their +{BUS_OFFSET})")
        for node in self.nodes:
            node.spawn()
        for node in self.nodes:
            node.wait()
        try:
            form_if_new([("127.0.0.1", p) for p in self.ports], self.masters, self.partitions,
                        say=say, where=f" in {self.data_dir}")
        except ClusterError as exc:
            raise ClusterError(f"{exc}. Start with the same --cluster-masters and "
                               f"--cluster-replicas, or remove {self.data_dir} to start "
                               "afresh") from None
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout_s: float = 60.0) -> None:
        """Until every live node says cluster_state:ok and every master has its
        replicas online (so that WAIT can be answered)."""
        def healthy() -> bool:
            live = [n.port for n in self.nodes if n.alive]
            if any(self._info(p).get("cluster_state") != "ok" for p in live):
                return False
            with self.client(live[0]) as c:
                view = nodes_of(c)
            masters = [n for n in view if n.master and n.slots and not n.failed]
            return sum(len(n.slots) for n in masters) > 0 and all(
                self._online_replicas(n.port) >= self.replicas for n in masters)

        until(healthy, "the cluster to be healthy (cluster_state:ok, replicas online)", timeout_s)

    def _online_replicas(self, port: int) -> int:
        try:
            with self.client(port) as c:
                info = c.info("replication")
        except redis.RedisError:
            return 0
        return sum(1 for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)
                   and v.get("state") == "online")

    def _info(self, port: int) -> dict[str, Any]:
        return cluster_info(("127.0.0.1", port))

    # -- watching --------------------------------------------------------------------

    def view(self) -> list[Node]:
        """The cluster as the first live node that answers sees it ([] if none)."""
        for node in self.nodes:
            if node.alive:
                try:
                    with self.client(node.port, timeout_s=0.5) as c:
                        return nodes_of(c)
                except redis.RedisError:
                    continue
        return []

    def masters_now(self) -> list[int]:
        """The ports of the masters that serve slots now."""
        return sorted(n.port for n in self.view() if n.master and n.slots and not n.failed)

    def taken_over(self, port: int) -> bool:
        """Whether the slots of a dead node now have another master (its replica
        was promoted), so that started again it comes back as a replica."""
        view = self.view()
        mine = next((n for n in view if n.port == port), None)
        return mine is None or not mine.slots

    def restart_dead(self, now: float, say: Callable[[str], None],
                     ) -> list[tuple[int, subprocess.Popen]]:
        """Start dead nodes again: a replica at once; a master once its slots
        have another master (so that it comes back as that one's replica, never
        with less than the cluster confirmed), or after three node timeouts
        when none took over (no replica could). Returns those started."""
        started = []
        for node in self.nodes:
            if node.alive:
                continue
            if node.port not in self.dead_since:
                self.dead_since[node.port] = now
                code = node.proc.returncode if node.proc else None
                how = f"was killed by {signal.Signals(-code).name}" if code and code < 0 else (
                    f"exited with code {code}")
                say(f"redis-{node.port} {how}; started again once the cluster has taken over "
                    "its slots")
                continue
            patience = 3 * self.node_timeout_ms / 1000
            if not (self.taken_over(node.port) or now - self.dead_since[node.port] > patience):
                continue
            try:
                node.start()
            except (PortInUse, TimeoutError, RuntimeError) as exc:
                say(f"redis-{node.port} could not start again: {exc}; retrying")
                continue
            del self.dead_since[node.port]
            assert node.proc is not None
            started.append((node.port, node.proc))
            say(f"redis-{node.port} started again (pid {node.proc.pid}); it rejoins the cluster")
        return started

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def masters_at(url: str) -> list[str]:
    """The masters (host:port) of the cluster one of whose nodes is at ``url``;
    [] when it cannot be asked."""
    try:
        client: redis.RedisCluster = redis.RedisCluster.from_url(url, socket_connect_timeout=2)
        try:
            return sorted(node.name for node in client.get_primaries())
        finally:
            client.close()
    except (redis.RedisError, redis.exceptions.RedisClusterException):
        return []


def masters_of(ports: list[int]) -> list[int]:
    """The masters serving slots now, as the first of the local ``ports`` that
    answers sees them."""
    for port in ports:
        try:
            with redis.Redis(port=port, decode_responses=True, socket_timeout=0.5) as c:
                return sorted(n.port for n in nodes_of(c) if n.master and n.slots and not n.failed)
        except redis.RedisError:
            continue
    return []
