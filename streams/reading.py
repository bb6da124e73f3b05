"""Reading a group's messages: new ones, a consumer's own pending ones, those
claimed from consumers that died, and its own claimed back for a retry.

Each read goes to the node that serves its streams (``streams.nodes``). On a
single server one XREADGROUP reads every stream of every partition and
blocks until something comes. On Redis Cluster one command may only name
keys of one slot, so each partition (whose streams share a hash tag) is
read with an XREADGROUP of its own, the partitions of one master in one
round trip, without blocking: an idle worker polls, and after an empty poll
waits a quarter of the time since a poll last found something, from half a
millisecond (under load: a gap is short, and so is the wait) up to
``poll_ms`` (idle: a few polls a second).

With replicas to wait for, a read ends with a WAIT on the same connection:
reading entries (XREADGROUP, XAUTOCLAIM, XCLAIM) writes the group's pending
list, so the WAIT covers everything the node held up to the entries read.
Entries whose node did not confirm are ``waiting``, not handled: a failover
could take them back. A read of a consumer's own pending entries writes
nothing, so it is fenced (``Nodes.execute(fence=True)``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.gates import Gates
from streams.nodes import Command, Nodes, Unconfirmed, first_key, is_transient
from streams.topology import Topology

Entry = tuple[str, str, dict[str, str] | None]  # stream, entry id, fields (None: deleted)


@dataclass
class Read:
    """What a read brought: entries to handle; entries read but not confirmed
    by a replica of their node (``waiting``: stream, entry id, why); and the
    nodes that did not answer (``failed``: a key of the node's, why)."""

    entries: list[Entry] = field(default_factory=list)
    waiting: list[tuple[str, str, BaseException]] = field(default_factory=list)
    failed: list[tuple[str, BaseException]] = field(default_factory=list)

    def take(self, key: str, answer: Any, entries_of: Any) -> list[Entry]:
        """File one command's answer; return the entries it brought to handle."""
        if isinstance(answer, Unconfirmed):
            for stream, entry_id, _ in entries_of(answer.answer):
                self.waiting.append((stream, entry_id, answer))
            return []
        if isinstance(answer, BaseException):
            if is_transient(answer):
                self.failed.append((key, answer))
                return []
            raise answer  # NOGROUP and the like: the runner's to handle
        found = entries_of(answer)
        self.entries += found
        return found


def fields_of(flat: Sequence[str] | None) -> dict[str, str] | None:
    """A stream entry's flat field list as a dict (None for a deleted entry)."""
    if flat is None:
        return None
    it = iter(flat)
    return dict(zip(it, it, strict=True))


def read_entries(reply: Any) -> list[Entry]:
    """XREADGROUP's reply: [[stream, [[id, [field, value, ...]], ...]], ...] (RESP2),
    or the same as a map (RESP3, and fakeredis)."""
    pairs = reply.items() if isinstance(reply, dict) else reply or []
    return [(stream, entry_id, fields_of(flat))
            for stream, entries in pairs for entry_id, flat in entries]


def claimed_entries(stream: str, reply: Any) -> list[Entry]:
    """XCLAIM's reply: [[id, [field, value, ...]], ...] (deleted entries left out)."""
    return [(stream, entry_id, fields_of(flat)) for entry_id, flat in reply or [] if flat]


class Reader:
    """The reads of one consumer of one group."""

    def __init__(self, nodes: Nodes, topology: Topology, group: str, name: str,
                 batch_size: int, poll_ms: int) -> None:
        self.nodes, self.topology = nodes, topology
        self.group, self.name = group, name
        self.batch_size = batch_size
        self.poll_ms = poll_ms
        self.last_found = 0.0  # when a poll last found something (monotonic; cluster)
        self._by_tag: dict[tuple[str, ...], dict[str, list[str]]] = {}

    def _partitions(self, streams: Sequence[str]) -> dict[str, list[str]]:
        """The streams by partition tag: what one XREADGROUP may name on a cluster
        (worked out once for each set of streams: a poll asks again and again)."""
        if not self.nodes.cluster:
            return {"": list(streams)}
        key = tuple(streams)
        if (found := self._by_tag.get(key)) is None:
            found = {}
            for stream in streams:
                tag = self.topology.split(stream.removesuffix(".dead"))[1]
                found.setdefault(tag, []).append(stream)
            if len(self._by_tag) > 64:  # the sets a gate can make: few; never many
                self._by_tag.clear()
            self._by_tag[key] = found
        return found

    def _xreadgroup(self, streams: Sequence[str], ids: Sequence[str],
                    block_ms: int | None = None) -> Command:
        count = ("COUNT", self.batch_size)
        block = ("BLOCK", block_ms) if block_ms is not None else ()
        return ("XREADGROUP", "GROUP", self.group, self.name, *count, *block, "STREAMS",
                *streams, *ids)

    def new(self, streams: Sequence[str], gates: Gates, block_ms: int | None) -> Read:
        """New messages of every partition whose node is not behind a gate. On
        a single server the read blocks up to ``block_ms``; on a cluster an
        empty poll waits instead, up to ``poll_ms``, but never past
        ``block_ms``."""
        open_ = [s for s in streams if not gates.waits(s)]
        read = Read()
        if not open_:
            if block_ms:
                time.sleep(min(block_ms, self.poll_ms) / 1000)
            return read
        if not self.nodes.cluster:
            command = self._xreadgroup(open_, [">"] * len(open_), block_ms)
            read.take(open_[0], self.nodes.execute([command], wait=True)[0], read_entries)
            return read
        commands = [self._xreadgroup(group, [">"] * len(group))
                    for group in self._partitions(open_).values()]
        for command, answer in zip(commands, self.nodes.execute(commands, wait=True),
                                   strict=True):
            read.take(first_key(command) or "", answer, read_entries)
        now = time.monotonic()
        if read.entries or read.waiting or not block_ms:
            self.last_found = now
        else:  # an empty poll: the longer nothing has come, the longer the wait
            time.sleep(min(max((now - self.last_found) / 4, 0.0005), self.poll_ms / 1000,
                           block_ms / 1000))
        return read

    def own_pending(self, streams: Sequence[str], stopping: Any) -> Iterable[Read]:
        """This consumer's own pending entries (left by a crash), a batch at a
        time, from every partition whose node answers."""
        cursors = {s: "0" for s in streams}
        while cursors and not stopping():
            groups = list(self._partitions(list(cursors)).values())
            commands = [self._xreadgroup(group, [cursors[s] for s in group]) for group in groups]
            read = Read()
            for group, answer in zip(groups, self.nodes.execute(commands, fence=True),
                                     strict=True):
                read.take(group[0], answer, read_entries)
                reply = answer.answer if isinstance(answer, Unconfirmed) else answer
                last = {} if isinstance(reply, BaseException) else {
                    stream: entry_id for stream, entry_id, _ in read_entries(reply)}
                for stream in group:  # read on from the last one; done when none came
                    if stream in last:
                        cursors[stream] = last[stream]
                    else:
                        cursors.pop(stream, None)
            if not (read.entries or read.waiting or read.failed):
                return
            yield read

    def claim(self, streams: Sequence[str], min_idle_ms: int, stopping: Any) -> Iterable[Read]:
        """Entries of the group pending longer than ``min_idle_ms`` (XAUTOCLAIM),
        a batch at a time."""
        starts = {s: "0-0" for s in streams}
        while starts and not stopping():
            commands = [("XAUTOCLAIM", s, self.group, self.name, min_idle_ms, start,
                         "COUNT", self.batch_size) for s, start in starts.items()]
            read = Read()
            for command, answer in zip(commands, self.nodes.execute(commands, wait=True),
                                       strict=True):
                stream = command[1]
                reply = answer.answer if isinstance(answer, Unconfirmed) else answer
                found = read.take(stream, answer,
                                  lambda r, s=stream: claimed_entries(s, r[1] if r else []))
                if isinstance(reply, BaseException) or not reply or reply[0] == "0-0" or not (
                        found or isinstance(answer, Unconfirmed)):
                    starts.pop(stream)
                else:
                    starts[stream] = reply[0]
            if not (read.entries or read.waiting):
                return
            yield read

    def reclaim(self, due: Sequence[tuple[str, str, int]]) -> Read:
        """Claim back our own messages (stream, entry id, least idle ms): the
        idle condition fails the claim if another consumer took one meanwhile."""
        commands = [("XCLAIM", s, self.group, self.name, idle, i) for s, i, idle in due]
        read = Read()
        for command, answer in zip(commands, self.nodes.execute(commands, wait=True),
                                   strict=True):
            read.take(command[1], answer, lambda r, s=command[1]: claimed_entries(s, r))
        return read

    def deliveries(self, entries: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """How many times Redis has delivered each entry (XPENDING); 1 where
        its node did not answer just now (at worst, one try more before the
        entry is dead-lettered)."""
        commands = [("XPENDING", s, self.group, i, i, 1) for s, i in entries]
        counts: dict[tuple[str, str], int] = {}
        for (stream, entry_id), answer in zip(entries, self.nodes.execute(commands),
                                              strict=True):
            if isinstance(answer, BaseException) and not is_transient(answer):
                raise answer
            counts[(stream, entry_id)] = (int(answer[0][3]) if answer and isinstance(
                answer, list) else 1)
        return counts
