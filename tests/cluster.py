"""A real local Redis Cluster for the tests (``shopctl.cluster``, the same the
launcher runs), and what the failover tests do to it: stop a replica, kill a
master, promote its replica, bring the old master back."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis
import redis.asyncio

from shopctl.cluster import LocalCluster, free_base, nodes_of

PARTITIONS = 12  # 4 per master


def start(data_dir: Path, node_timeout_ms: int = 3000, aof: bool = False) -> LocalCluster:
    return LocalCluster(free_base(), data_dir, partitions=PARTITIONS, aof=aof,
                        node_timeout_ms=node_timeout_ms, stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL).start()


def sync_client(cluster: LocalCluster) -> redis.RedisCluster:
    return redis.RedisCluster(host="127.0.0.1", port=cluster.first_port, decode_responses=True)


def async_client(cluster: LocalCluster) -> Callable[[], redis.asyncio.RedisCluster]:
    return lambda: redis.asyncio.RedisCluster(host="127.0.0.1", port=cluster.first_port,
                                              decode_responses=True)


def flush(cluster: LocalCluster) -> None:
    for port in cluster.masters_now():
        with cluster.client(port) as c:
            c.flushall()


def master_of(cluster: LocalCluster, key: str) -> int:
    with sync_client(cluster) as c:
        return int(c.get_node_from_key(key).port)


def replica_of(cluster: LocalCluster, master: int) -> int:
    view = cluster.view()
    master_id = next(n.id for n in view if n.port == master)
    return next(n.port for n in view if n.master_id == master_id and not n.failed)


def pid_of(cluster: LocalCluster, port: int) -> int:
    node = next(n for n in cluster.nodes if n.port == port)
    assert node.proc is not None
    return node.proc.pid


def stop(cluster: LocalCluster, port: int) -> None:
    """Freeze a node (SIGSTOP): it neither answers nor replicates."""
    os.kill(pid_of(cluster, port), signal.SIGSTOP)


def resume(cluster: LocalCluster, port: int) -> None:
    os.kill(pid_of(cluster, port), signal.SIGCONT)


def kill(cluster: LocalCluster, port: int) -> None:
    """SIGKILL a node: what it had not replicated is gone with it."""
    node = next(n for n in cluster.nodes if n.port == port)
    assert node.proc is not None
    node.proc.kill()
    node.proc.wait()


def promote(cluster: LocalCluster, replica: int, timeout_s: float = 20) -> None:
    """Make a replica whose master is dead the master of its slots (TAKEOVER:
    without the master's agreement or the others' votes, at once)."""
    with cluster.client(replica) as c:
        c.execute_command("CLUSTER", "FAILOVER", "TAKEOVER")
    deadline = time.monotonic() + timeout_s
    while True:
        with cluster.client(replica) as c:
            if any(n.port == replica and n.master and n.slots for n in nodes_of(c)):
                return
        assert time.monotonic() < deadline, f"{replica} was not promoted"
        time.sleep(0.05)


def lose(cluster: LocalCluster, master: int, replica: int) -> None:
    """Lose what ``master`` wrote since its ``replica`` was frozen (``stop``):
    kill the master, then the replica, so that what the master had sent and
    the frozen replica had not read yet goes with it (it is in the replica's
    socket, not in its data); start the replica again from its AOF and
    promote it; start the old master again, as its replica."""
    kill(cluster, master)
    kill(cluster, replica)
    next(n for n in cluster.nodes if n.port == replica).start()
    promote(cluster, replica)
    bring_back(cluster, master)


def bring_back(cluster: LocalCluster, port: int) -> None:
    """Start a killed node again and wait until it is a replica in sync, so
    that its new master can have writes confirmed."""
    node = next(n for n in cluster.nodes if n.port == port)
    node.start()
    cluster.wait_healthy()
