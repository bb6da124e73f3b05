"""Gates: slots whose node must show it is there again before anything read
from it, or waiting on it, is handled.

A gate closes on a slot (named by a key in it) when its node cannot be
reached, or when, with replicas to wait for, no replica confirmed that it
holds what the node held: a message read from such a node may be one that a
failover takes back, and a sub-step written there may be lost with it. While
a gate is closed the runner reads nothing from that node and keeps the
messages that wait on it in memory (they stay pending in Redis, counted by
nothing). Other nodes go on.

Every so often (0.1 s, doubling to 2 s) each closed gate is tried: a write
in its slot and a WAIT for the replicas (``Nodes.confirm``), sent to
whichever node serves the slot now (after a failover, the promoted replica).
Once that succeeds the gate opens, and what waited on it is claimed back
and handled: the entries that still exist and are still this consumer's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from streams.nodes import Nodes, Unconfirmed

log = logging.getLogger("streams.consumer")

FIRST_TRY_S = 0.1
LONGEST_TRY_S = 2.0


@dataclass
class Gate:
    node: str
    cause: BaseException
    since: float
    next_try: float
    delay: float = FIRST_TRY_S


class Gates:
    """The closed gates of one consumer, by the key that names each slot."""

    def __init__(self, nodes: Nodes, group: str) -> None:
        self.nodes = nodes
        self.group = group
        self._closed: dict[str, Gate] = {}

    def __bool__(self) -> bool:
        return bool(self._closed)

    def close(self, key: str, cause: BaseException) -> None:
        """Wait for ``key``'s node; log once per node."""
        if key in self._closed:
            return
        node = getattr(cause, "node", None) or self._node_of(key)
        if node not in self.nodes_closed():
            log.warning("%s: %s; what it serves waits, the rest goes on", self.group,
                        describe(node, cause))
        now = time.monotonic()
        self._closed[key] = Gate(node, cause, now, now + FIRST_TRY_S)

    def nodes_closed(self) -> set[str]:
        """The names of the nodes something waits for."""
        return {gate.node for gate in self._closed.values()}

    def waits(self, key: str) -> bool:
        """Whether ``key``'s slot is behind a closed gate (its node, as it was
        when the gate closed, or as it is now)."""
        if key in self._closed:
            return True
        return bool(self._closed) and self._node_of(key) in self.nodes_closed()

    def next_try(self) -> float:
        return min((gate.next_try for gate in self._closed.values()), default=float("inf"))

    def try_due(self, now: float | None = None) -> list[str]:
        """Try the gates that are due (every one when ``now`` is None); return
        the keys of those that opened."""
        due = [key for key, gate in self._closed.items() if now is None or gate.next_try <= now]
        now = time.monotonic()
        if not due:
            return []
        opened = []
        for key, failure in self.nodes.confirm(due).items():
            gate = self._closed[key]
            if failure is None:
                opened.append(key)
                del self._closed[key]
                if gate.node not in self.nodes_closed():
                    log.warning("%s: %s after %.1fs; resuming", self.group,
                                back(gate.node, self._node_of(key), gate.cause),
                                now - gate.since)
                continue
            gate.cause = failure
            gate.node = getattr(failure, "node", None) or gate.node
            gate.next_try = now + gate.delay
            gate.delay = min(gate.delay * 2, LONGEST_TRY_S)
        return opened

    def _node_of(self, key: str) -> str:
        try:
            return self.nodes.node_of(key)
        except Exception:  # noqa: BLE001  # no node serves it now: it is "nowhere"
            return "?"


def describe(node: str, cause: BaseException) -> str:
    if isinstance(cause, Unconfirmed):
        return f"no replica of redis {node} confirmed what was read or written there ({cause})"
    return f"redis unreachable at {node} ({getattr(cause, 'cause', cause)})"


def back(node: str, now: str, cause: BaseException) -> str:
    if isinstance(cause, Unconfirmed):
        return f"a replica of redis {now} confirmed"
    if now != node:
        return f"redis is back: what {node} served is served by {now}"
    return f"redis is back at {node}"
