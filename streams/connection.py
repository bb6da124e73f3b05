"""Redis clients, one per process, built by its ``main`` and passed in."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import hiredis
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ConstantBackoff
from redis.crc import key_slot


def redacted(url: str) -> str:
    """A Redis URL fit for a log line: its password, if any, replaced by ***."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hosts}"))


def cluster_nodes(url: str) -> tuple[str, list[tuple[str, int]]]:
    """A cluster's URL may name several nodes, comma-separated
    (``redis://:pw@10.0.0.5:6379,10.0.0.6:6379``), so that a process can start
    while one of them is down: the URL with the first, and the others."""
    parts = urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    first, *others = hosts.split(",")
    nodes = []
    for node in others:
        host, _, port = node.rpartition(":")
        nodes.append((host or node, int(port) if host else 6379))
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{first}")), nodes


def is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster (sync or asyncio)."""
    return isinstance(client, redis.RedisCluster | redis.asyncio.RedisCluster)


def connect(url: str, *, cluster: bool = False, block_ms: int = 1000) -> Any:
    """A synchronous client for a worker; its socket timeout outlasts a blocking
    read. With ``cluster``, ``url`` is any node of a Redis Cluster, or several
    (``cluster_nodes``): the client learns the slots from the first that
    answers and follows MOVED and ASK (``streams.nodes`` sends the hot path's
    commands itself, a round trip per node)."""
    options: dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": 2,
        "socket_timeout": block_ms / 1000 + 5,
    }
    if cluster:
        first, others = cluster_nodes(url)
        return redis.RedisCluster.from_url(
            first, startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in others],
            **options)
    return redis.Redis.from_url(url, health_check_interval=30, **options)


def detect_cluster(url: str) -> bool:
    """Whether the server at ``url`` is a node of a Redis Cluster (for tools
    given one URL: they work on either)."""
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            return bool(client.info("cluster").get("cluster_enabled"))
    except redis.RedisError:
        return False


def connect_async(
    url: str, *, cluster: bool = False, max_connections: int = 64, timeout_s: float = 5.0
) -> Any:
    """An asyncio client for the API.

    Requests beyond ``max_connections`` wait (up to ``timeout_s``) for a free
    connection instead of failing, and a command waits up to ``timeout_s`` for
    its answer. When Redis is down a request fails fast (one quick retry) so
    that the caller gets its 503 at once. With ``cluster``, ``url`` is any
    node of a Redis Cluster, and ``max_connections`` is per node.
    """
    if cluster:
        first, others = cluster_nodes(url)
        return redis.asyncio.RedisCluster.from_url(
            first, startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in others],
            decode_responses=True, max_connections=max_connections,
            socket_connect_timeout=min(1.0, timeout_s), socket_timeout=timeout_s,
        )
    pool: redis.asyncio.BlockingConnectionPool = redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,
        decode_responses=True,
        socket_connect_timeout=min(1.0, timeout_s),
        socket_timeout=timeout_s,
        health_check_interval=30,
        retry=AsyncRetry(ConstantBackoff(0.05), 1),  # type: ignore[arg-type]  # seconds, float is fine
    )
    return redis.asyncio.Redis(connection_pool=pool)


@contextlib.asynccontextmanager
async def one_slot(client: Any, key: str) -> AsyncIterator[Any]:
    """A client for commands on ``key``'s slot only, such as a WATCH/MULTI/EXEC
    transaction: ``client`` itself on a single server; on a cluster, a plain
    client of the master that serves the slot now (redis-py's asyncio cluster
    client runs each command after WATCH on an event loop of its own, in a
    thread). Should the slot move meanwhile, its commands answer MOVED."""
    if not is_cluster(client):
        yield client
        return
    await client.initialize()
    node = client.get_node_from_key(key)
    options = node.connection_kwargs
    direct = redis.asyncio.Redis(
        host=node.host, port=node.port, username=options.get("username"),
        password=options.get("password"), decode_responses=True,
        socket_timeout=options.get("socket_timeout"),
        socket_connect_timeout=options.get("socket_connect_timeout"))
    try:
        yield direct
    finally:
        await direct.aclose()  # type: ignore[attr-defined]


async def unserved(client: Any, keys: Sequence[str]) -> list[str]:
    """On a cluster: which of ``keys``' slots have no master that answers now
    and says the cluster is ok (after one fresh look at the slots); [] when all do."""
    problems: list[str] = []
    for attempt in range(2):
        problems = []
        masters: dict[str, tuple[Any, list[str]]] = {}
        for key in keys:
            slot = key_slot(key.encode())
            try:
                node = client.nodes_manager.get_node_from_slot(slot)
            except (redis.RedisError, redis.exceptions.RedisClusterException):
                problems.append(f"no master serves slot {slot} ({key})")
                continue
            masters.setdefault(node.name, (node, []))[1].append(key)
        for name, (node, served) in masters.items():
            try:
                state = (await client.cluster_info(target_nodes=node)).get("cluster_state")
            except (redis.RedisError, redis.exceptions.RedisClusterException, OSError) as exc:
                problems.append(f"{name}, the master of {' '.join(served)}, does not answer "
                                f"({exc})")
                continue
            if state != "ok":
                problems.append(f"{name} says cluster_state:{state}")
        if not problems or attempt:
            break
        try:  # a failover may have moved the slots: look again
            await client.nodes_manager.initialize()
        except (redis.RedisError, redis.exceptions.RedisClusterException, OSError):
            break
    return problems


def execute_all(client: redis.Redis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Send ``commands`` in one write on one connection and read every answer:
    a pipeline without redis-py's pipeline machinery (measured: the projector's
    CPU per order 65 -> 61 us). A command's error comes back in its place; a
    failed connection raises, and is dropped so that no answer is left unread
    on it."""
    return read_all(send_all(client, commands))


@dataclass(frozen=True, slots=True)
class Sent:
    """Commands written on a connection, their answers not read yet."""

    pool: Any
    connection: Any
    count: int


def send_all(client: redis.Redis, commands: Sequence[tuple[Any, ...]]) -> Sent:
    """The first half of ``execute_all``: write; ``read_all`` reads. Between
    the two, other servers can be written to, so that they all work at once."""
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        connection.send_packed_command([hiredis.pack_command(c) for c in commands])
    except BaseException:
        connection.disconnect()
        pool.release(connection)
        raise
    return Sent(pool, connection, len(commands))


def read_all(sent: Sent) -> list[Any]:
    """Every answer of what ``send_all`` wrote, in order."""
    try:
        answers: list[Any] = []
        for _ in range(sent.count):
            try:
                answers.append(sent.connection.read_response())
            except redis.ResponseError as exc:
                answers.append(exc)
        return answers
    except BaseException:
        sent.connection.disconnect()
        raise
    finally:
        sent.pool.release(sent.connection)
