"""What a bus carries, declared by its user: event types, their streams, the
groups that read them, and how events are split into partitions.

The bus knows no application. An application declares one ``Topology`` (the
shop's is ``shop/topology.py``) and each of its processes hands it, with the
number of partitions it runs with, to the runner and to whatever publishes.

Partitions. With ``partitions=N`` every stream is split into N streams, one
per hash tag: ``orders.created{p0}`` ... ``orders.created{p3}``. Every key an
atomic step touches carries its partition's tag, so on Redis Cluster the step
stays in one slot. With one partition nothing is tagged: the names are the
plain ones (``orders.created``).

Which partition an event belongs to is the application's rule
(``partition_of``), applied to the envelope field that names what the event
is about (``subject``, e.g. ``order_id``). The runner checks that an entry
arrived on its subject's partition.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import redis
import redis.asyncio
from pydantic import BaseModel

# A message that could not be handled moves to "<stream>.dead", with the reason.
DEAD_SUFFIX = ".dead"
_TAGGED = re.compile(r"(?P<base>.*)\{p(?P<partition>\d+)\}")


@dataclass(frozen=True, slots=True)
class EventType:
    """One kind of event: its name (``type`` field), payload model and stream."""

    name: str
    payload: type[BaseModel]
    stream: str


def _single(_subject: str, _count: int) -> int:
    return 0


@dataclass(frozen=True)
class Topology:
    """An application's events, streams and groups, and its partitioning."""

    name: str  # prefix of the bus's own keys (delivery errors, the partition count)
    subject: str  # the envelope field naming what an event is about: its partition key
    events: Sequence[EventType]
    readers: Mapping[str, Sequence[str]]  # stream -> the groups that read it
    # (subject, partitions) -> the subject's partition, in range(partitions).
    partition_of: Callable[[str, int], int] = _single
    partitions: int = 1
    _by_type: dict[str, EventType] = field(init=False, repr=False, compare=False)
    _payload_type: dict[type[BaseModel], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.partitions < 1:
            raise ValueError(f"partitions must be at least 1, not {self.partitions}")
        by_type = {e.name: e for e in self.events}
        object.__setattr__(self, "_by_type", by_type)
        object.__setattr__(self, "_payload_type", {e.payload: e.name for e in self.events})
        unread = {e.stream for e in self.events} - set(self.readers)
        if unread:
            raise ValueError(f"streams no group reads: {sorted(unread)}")

    def with_partitions(self, partitions: int) -> Topology:
        """The same topology, split into ``partitions``."""
        return replace(self, partitions=partitions)

    def with_streams(self, readers: Mapping[str, Sequence[str]]) -> Topology:
        """The same topology with more streams (each with the groups that read
        it) that no event type goes to: another component's, such as a
        gateway's message stores, partitioned alike and seen by the same
        operations (health, dead letters, replay)."""
        return replace(self, readers={**self.readers, **readers})

    # -- events ----------------------------------------------------------------

    def event(self, event_type: str) -> EventType | None:
        return self._by_type.get(event_type)

    def type_of(self, payload: Any) -> str:
        """The event type name of a payload instance."""
        try:
            return self._payload_type[type(payload)]
        except KeyError:
            raise KeyError(f"{type(payload).__name__} is not an event of {self.name}") from None

    # -- streams and partitions --------------------------------------------------

    @property
    def streams(self) -> tuple[str, ...]:
        """The streams, unpartitioned, in the order they were declared."""
        return tuple(self.readers)

    def tag(self, partition: int) -> str:
        """The hash tag of a partition (``{p3}``); none with one partition."""
        return "" if self.partitions == 1 else f"{{p{partition}}}"

    def tags(self) -> list[str]:
        return [self.tag(p) for p in range(self.partitions)]

    def tag_of(self, subject: str) -> str:
        """The hash tag of the partition a subject (an order id, say) lives in."""
        return self.tag(self.partition_of(subject, self.partitions))

    def stream(self, stream: str, tag: str = "") -> str:
        """One partition's stream: ``orders.created{p3}``."""
        return stream + tag

    def stream_of(self, event_type: str, tag: str = "") -> str:
        """The stream (of the partition tagged ``tag``) an event type goes to."""
        return self._by_type[event_type].stream + tag

    def partitioned(self, stream: str) -> list[str]:
        """Every partition's stream of one stream."""
        return [stream + tag for tag in self.tags()]

    def all_streams(self) -> list[str]:
        """Every stream of every partition, partition by partition."""
        return [stream + tag for tag in self.tags() for stream in self.streams]

    def dead_streams(self) -> list[str]:
        return [dead(s) for s in self.all_streams()]

    def groups(self) -> list[str]:
        return list(dict.fromkeys(g for groups in self.readers.values() for g in groups))

    def split(self, stream: str) -> tuple[str, str]:
        """A partition's stream as (the stream, its tag): ``('orders.created', '{p3}')``."""
        if found := _TAGGED.fullmatch(stream):
            return found["base"], f"{{p{found['partition']}}}"
        return stream, ""

    def readers_of(self, stream: str) -> Sequence[str]:
        """The groups that read a stream of any partition."""
        return self.readers.get(self.split(stream)[0], ())

    # -- the bus's own keys ------------------------------------------------------

    def delivery_error(self, group: str, stream: str, entry_id: str) -> str:
        """The last error a group's handler raised for one entry, kept in Redis
        (with a TTL) so that whichever consumer gives up on the entry can name it."""
        return f"{self.name}:error:{group}:{stream}:{entry_id}"

    def partitions_key(self) -> str:
        """The partition count the data was written with: fixed for its lifetime."""
        return f"{self.name}:partitions"


def dead(stream: str) -> str:
    """The dead-letter stream of ``stream`` (``orders.created{p3}.dead``: the same slot)."""
    return stream + DEAD_SUFFIX


def is_dead(stream: str) -> bool:
    return stream.endswith(DEAD_SUFFIX)


def entry_order(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``1763700000000-0``) as something that sorts in stream order."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class PartitionMismatch(RuntimeError):
    """The data was written with another partition count than this process's."""


def _refuse_other(found: int, topology: Topology) -> None:
    if found != topology.partitions:
        raise PartitionMismatch(
            f"this data was written with PARTITIONS={found}; this process has "
            f"PARTITIONS={topology.partitions}. Start with PARTITIONS={found} (or a fresh "
            "data folder)"
        )


def _refuse_untagged(client: Any, topology: Topology) -> None:
    if topology.partitions < 2 and isinstance(
            client, redis.RedisCluster | redis.asyncio.RedisCluster):
        raise PartitionMismatch(
            "on a Redis Cluster every key an atomic step touches must carry a partition's "
            "hash tag, which takes PARTITIONS of 2 or more (4 per master is a good start)")


def check_partitions(client: Any, topology: Topology) -> None:
    """Record the partition count on first start; refuse a different one later,
    since every key and stream name depends on it (and, on a cluster, one
    partition: nothing would be tagged)."""
    _refuse_untagged(client, topology)
    key = topology.partitions_key()
    client.set(key, topology.partitions, nx=True)
    _refuse_other(int(client.get(key)), topology)


async def check_partitions_async(client: Any, topology: Topology) -> None:
    """``check_partitions`` on an asyncio client."""
    _refuse_untagged(client, topology)
    key = topology.partitions_key()
    await client.set(key, topology.partitions, nx=True)
    _refuse_other(int(await client.get(key)), topology)


async def stored_topology(client: Any, topology: Topology) -> Topology:
    """The topology with the partition count its data was written with (for
    tools that read the data of whatever runs: one partition if none ran yet)."""
    return topology.with_partitions(int(await client.get(topology.partitions_key()) or 1))
