"""Commands sent to the node that serves their keys, one round trip per node.

On a single server there is one node: the commands go in one write and their
answers are read back in order (``connection.execute_all``). On Redis Cluster
each command goes to the master of its first key's slot, the commands of one
master in one write, master after master. An answer that says the slot is
served elsewhere means the command did not run, and it is sent again:

- MOVED: the slot has a new master (a failover, a resharding); the client's
  slot map is read again from the cluster and the command goes there;
- ASK: the slot is migrating; the command goes once to the importing node,
  after ASKING;
- TRYAGAIN, CLUSTERDOWN: a moment later.

redis-py's cluster client does the same for one command at a time; this
module does it for a batch, which is what the workers send, at one round
trip per master instead of one per command. redis-py's cluster pipeline does
that too, at seven to ten times the CPU per command (measured: 95 against
10-14 us per EVALSHA, batches of 100 over three masters), and cannot wait for
replicas on the connection that wrote.

**Scripts** (``("EVALSHA", Script, numkeys, ...)``) are loaded on each node
the first time they are sent there, in the same write, and again after the
node lost them (NOSCRIPT: a restart, a failover to a replica that never ran
them).

**Replicas.** Replication is asynchronous: a master that dies can take its
last writes with it. With ``wait=True`` each node's batch ends with ``WAIT
replicas ms``: the answers of a node whose replicas did not confirm, in time,
everything this connection had written become ``Unconfirmed`` (carrying the
answer). A command that writes nothing gives WAIT nothing to wait for, so
``fence=True`` writes a key of the node's own (``fence_key``) first: whatever
the node held before, a replica then holds too (replication keeps order).

A node that cannot be reached answers each of its commands with the error,
in its place; the others' answers are not lost with it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis
from redis.crc import key_slot
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    TryAgainError,
)

from streams.connection import Sent, is_cluster, read_all, send_all
from streams.scripts import Script

log = logging.getLogger(__name__)

Command = tuple[Any, ...]

# Answers that mean "not run here; try again", in the order they are checked.
REDIRECTS = (MovedError, AskError, TryAgainError, ClusterDownError)
# Errors of a client that say nothing about the command, only about reaching
# its node: what the runner rides out with a backoff.
TRANSIENT: tuple[type[BaseException], ...] = (
    redis.ConnectionError, redis.TimeoutError, ClusterDownError, TryAgainError,
    RedisClusterException,
)
_KEYLESS = frozenset({"PING", "WAIT", "SCRIPT", "ASKING", "ECHO", "TIME", "INFO"})


class Unconfirmed(redis.RedisError):
    """No replica of ``node`` confirmed in time that it holds what the node held
    when the command ran. The command ran: ``answer`` is its answer; ``key``
    is the command's first key (its slot is what to wait for)."""

    def __init__(self, node: str, key: str, confirmed: Any, wanted: int, wait_ms: int,
                 answer: Any = None) -> None:
        super().__init__(f"{confirmed} of {wanted} replica(s) of {node} confirmed within "
                         f"{wait_ms} ms")
        self.node, self.key, self.answer = node, key, answer


class Unreachable(redis.ConnectionError):
    """The node serving ``key`` could not be reached, or no node serves its slot
    now: the command may or may not have run."""

    def __init__(self, node: str, key: str, cause: BaseException) -> None:
        super().__init__(f"{node}: {type(cause).__name__}: {cause}")
        self.node, self.key, self.cause = node, key, cause


def is_transient(error: BaseException | None) -> bool:
    """Whether an answer of ``Nodes.execute`` is about reaching its node (or its
    replicas), not about the command."""
    return isinstance(error, Unreachable | Unconfirmed)


def hash_tag(key: str) -> str:
    """The part of a key that decides its slot (Redis Cluster's rule): the text
    between the first ``{`` and the next ``}`` if not empty, else the key."""
    start = key.find("{")
    if start >= 0:
        end = key.find("}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def fence_key(prefix: str, key: str) -> str:
    """A key in ``key``'s slot, written to give WAIT something to wait for."""
    return f"{prefix}:fence{{{hash_tag(key)}}}"


def first_key(command: Command) -> str | None:
    """The key that decides where a command goes (None: it has none)."""
    name = str(command[0]).upper()
    if name in ("EVALSHA", "EVAL"):
        return str(command[3]) if int(command[2]) else None
    if name == "XREADGROUP":
        return str(command[list(command).index("STREAMS") + 1])
    if name in ("XGROUP", "XINFO"):  # a subcommand, then the key
        return str(command[2])
    if name in _KEYLESS:
        return None
    return str(command[1])


class Nodes:
    """Sends commands, a round trip per node (see the module's docstring).

    ``replicas``: how many replicas ``wait`` and ``fence`` wait for (0: none,
    and they add nothing); ``wait_ms``: how long one WAIT lasts; ``prefix``:
    of the fence keys (the bus's own key prefix)."""

    def __init__(self, client: Any, *, prefix: str = "bus", replicas: int = 0,
                 wait_ms: int = 1000, attempts: int = 4) -> None:
        self.client = client
        self.cluster = is_cluster(client)
        self.prefix = prefix
        self.replicas = replicas
        self.wait_ms = wait_ms
        self.attempts = attempts
        self._loaded: dict[str, set[str]] = {}  # node -> shas known to be there
        if not self.cluster:
            kwargs = client.connection_pool.connection_kwargs
            self._single = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"

    def forget_scripts(self) -> None:
        """After a reconnect a node may be a new one, without our scripts."""
        self._loaded.clear()

    # -- where keys live -----------------------------------------------------------

    def node_of(self, key: str) -> str:
        """The name (host:port) of the node that serves ``key``'s slot now."""
        if not self.cluster:
            return self._single
        return str(self.client.nodes_manager.get_node_from_slot(key_slot(key.encode())).name)

    def refresh(self) -> None:
        """Read the cluster's slot map again (after a failover, say)."""
        if self.cluster:
            try:
                self.client.nodes_manager.initialize()
            except (redis.RedisError, RedisClusterException, OSError) as exc:
                log.debug("could not read the cluster's slots: %s", exc)

    # -- sending -----------------------------------------------------------------------

    def execute(self, commands: Sequence[Command], *, wait: bool = False,
                fence: bool = False) -> list[Any]:
        """Each command's answer (or error) in its place; see the module's docstring."""
        wait = (wait or fence) and self.replicas > 0
        fence = fence and wait
        answers: list[Any] = [None] * len(commands)
        todo = list(range(len(commands)))
        asking: dict[int, str] = {}  # command index -> node to ASK
        refreshed = False
        for attempt in range(self.attempts):
            again: list[int] = []
            routes = self._route(commands, todo, asking, answers)
            # Every node's batch is written before any answer is read: the
            # masters work on them at once, a round trip in all, not one each.
            sent = {node: self._write(node, [commands[i] for i in indexes], wait, fence,
                                      ask=any(i in asking for i in indexes))
                    for node, indexes in routes.items()}
            for node, indexes in routes.items():
                replies = self._read(node, [commands[i] for i in indexes], wait, sent[node])
                for i, reply in zip(indexes, replies, strict=True):
                    asking.pop(i, None)
                    answers[i] = reply
                    if isinstance(reply, NoScriptError):
                        again.append(i)  # _read forgot the node's scripts: loaded next time
                    elif self.cluster and isinstance(reply, REDIRECTS):
                        again.append(i)
                        if isinstance(reply, AskError) and not isinstance(reply, MovedError):
                            asking[i] = f"{reply.host}:{reply.port}"
                if self.cluster and isinstance(replies[0], Unreachable) and not refreshed:
                    self.refresh()  # the node is gone; perhaps its slots have a new master
                    refreshed = True
            if not again or attempt == self.attempts - 1:
                break
            if any(isinstance(answers[i], MovedError | ClusterDownError) for i in again):
                if any(isinstance(answers[i], ClusterDownError) for i in again):
                    time.sleep(0.1 * (attempt + 1))
                self.refresh()
            elif any(isinstance(answers[i], TryAgainError) for i in again):
                time.sleep(0.05 * (attempt + 1))
            todo = again
        for i, answer in enumerate(answers):
            if isinstance(answer, REDIRECTS):  # still elsewhere after every attempt: give up
                answers[i] = Unreachable("?", first_key(commands[i]) or "", answer)
        return answers

    def confirm(self, keys: Iterable[str]) -> dict[str, BaseException | None]:
        """For each key: None once its node answers and (with ``replicas``) a
        replica holds everything the node held; else why not."""
        keys = list(dict.fromkeys(keys))
        if self.replicas > 0:
            probes: list[Command] = [("SET", fence_key(self.prefix, k), "1", "PX", 600_000)
                                     for k in keys]
        else:
            probes = [("EXISTS", fence_key(self.prefix, k)) for k in keys]
        answers = self.execute(probes, fence=True)
        return {k: a if isinstance(a, BaseException) else None
                for k, a in zip(keys, answers, strict=True)}

    def _route(self, commands: Sequence[Command], todo: list[int], asking: dict[int, str],
               answers: list[Any]) -> dict[str, list[int]]:
        """The commands to send, by node name."""
        if not self.cluster:
            return {self._single: todo}
        routes: dict[str, list[int]] = {}
        for i in todo:
            if i in asking:
                routes.setdefault(asking[i], []).append(i)
                continue
            key = first_key(commands[i])
            try:
                if key is None:
                    raise RedisClusterException(f"{commands[i][0]} names no key: no node for it")
                node = self.client.nodes_manager.get_node_from_slot(key_slot(key.encode()))
            except (RedisClusterException, redis.RedisError) as exc:
                answers[i] = Unreachable("no node", key or "", exc)  # no master for the slot
                continue
            routes.setdefault(node.name, []).append(i)
        return routes

    def _client_of(self, node: str) -> Any:
        if not self.cluster:
            return self.client
        found = self.client.get_node(node_name=node)
        if found is None:  # an ASK to a node the map does not know yet
            self.refresh()
            found = self.client.get_node(node_name=node)
        if found is None:
            raise redis.ConnectionError(f"no node {node} in the cluster's map")
        return self.client.get_redis_connection(found)

    def _write(self, node: str, commands: list[Command], wait: bool, fence: bool,
               ask: bool) -> tuple[list[Command], Sent | BaseException]:
        """Write one node's batch: its scripts first where it lacks them, the
        commands, then the fence and the WAIT; what was written, and how."""
        loaded = self._loaded.setdefault(node, set())
        packed: list[Command] = []
        for command in commands:
            if str(command[0]).upper() == "EVALSHA" and isinstance(command[1], Script):
                script = command[1]
                if script.sha not in loaded:
                    packed.append(("SCRIPT", "LOAD", script.source))
                    loaded.add(script.sha)
                command = (command[0], script.sha, *command[2:])
            if ask:
                packed.append(("ASKING",))
            packed.append(command)
        if fence:
            key = first_key(commands[0])
            packed.append(("SET", fence_key(self.prefix, key or node), "1", "PX", 600_000))
        if wait:
            packed.append(("WAIT", self.replicas, self.wait_ms))
        try:
            return packed, send_all(self._client_of(node), packed)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            return packed, exc

    def _read(self, node: str, commands: list[Command], wait: bool,
              written: tuple[list[Command], Sent | BaseException]) -> list[Any]:
        """The answers of one node's batch, each in its command's place."""
        packed, sent = written
        try:
            if isinstance(sent, BaseException):
                raise sent
            replies = read_all(sent)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._loaded.pop(node, None)
            return [Unreachable(node, first_key(c) or "", exc) for c in commands]
        confirmed = replies[-1] if wait else None
        answers = [r for c, r in zip(packed, replies, strict=True)
                   if c[0] not in ("SCRIPT", "ASKING")][:len(commands)]
        if any(isinstance(a, NoScriptError) for a in answers):
            self._loaded.get(node, set()).clear()
        if wait and not (isinstance(confirmed, int) and confirmed >= self.replicas):
            return [a if isinstance(a, BaseException)
                    else Unconfirmed(node, first_key(c) or "", confirmed, self.replicas,
                                     self.wait_ms, a)
                    for c, a in zip(commands, answers, strict=True)]
        return answers
