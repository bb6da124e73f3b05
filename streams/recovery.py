"""What the runner keeps in Redis to recover: delivery counts, the last error
of a failing message, the backoff between tries, forgetting consumers long
gone, and riding out an outage.

Nothing here is kept only in memory that another consumer would need: Redis
counts deliveries (XPENDING), and the last error of a message is a key with a
TTL, so the consumer that finally gives up on a message can name the error
even if another one raised it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import redis

from streams.delivery import Delivery
from streams.nodes import Nodes
from streams.scripts import Script
from streams.topology import Topology

log = logging.getLogger("streams.consumer")

# How long a handler's last error for a message is kept in Redis: far longer
# than any retry schedule, short enough that nothing piles up.
ERROR_TTL_S = 24 * 3600
# A consumer with nothing pending that has not even tried to read for this
# long is gone (a replica that crashed under a host-pid name): it is removed
# from its group so that the list does not grow with every restart.
FORGET_CONSUMERS_AFTER_S = 3600

# Remove the group's consumers that hold nothing and have been idle long
# enough, atomically: checked and deleted in one step, so a consumer that
# reads meanwhile cannot lose its pending entries with it.
# KEYS: stream. ARGV: group, idle ms, the caller's own name (kept).
FORGET_CONSUMERS = Script(
    "forget_consumers",
    """
local gone = {}
for _, row in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local c = {}
  for i = 1, #row, 2 do c[row[i]] = row[i + 1] end
  if c['pending'] == 0 and c['idle'] >= tonumber(ARGV[2]) and c['name'] ~= ARGV[3] then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], c['name'])
    gone[#gone + 1] = c['name']
  end
end
return gone
""",
)


def backoff_s(deliveries: int, first_s: float, longest_s: float) -> float:
    """The wait after a message's ``deliveries``-th failed try: ``first_s``,
    doubling each time, at most ``longest_s``."""
    return min(first_s * 2 ** max(0, deliveries - 1), longest_s)


def record_errors(
    nodes: Nodes, topology: Topology, group: str, failed: list[Delivery]
) -> None:
    """Keep the error of each failed delivery, for ERROR_TTL_S."""
    answers = nodes.execute([
        ("SET", topology.delivery_error(group, d.stream, d.entry_id),
         f"{type(d.error).__name__}: {d.error}", "EX", ERROR_TTL_S) for d in failed])
    for answer in answers:
        if isinstance(answer, redis.RedisError):
            raise answer


def last_errors(
    nodes: Nodes, topology: Topology, group: str, batch: list[Delivery]
) -> dict[tuple[str, str], str]:
    """The last recorded error of each message, by (stream, entry id): one GET
    each (each key is in its stream's slot), in one round trip per node."""
    if not batch:
        return {}
    found = nodes.execute([("GET", topology.delivery_error(group, d.stream, d.entry_id))
                           for d in batch])
    return {(d.stream, d.entry_id): e for d, e in zip(batch, found, strict=True)
            if isinstance(e, str)}


def forget_consumers(
    nodes: Nodes, group: str, streams: Iterable[str], keep: str, after_s: float
) -> list[str]:
    """Remove the group's consumers that hold nothing and have been idle for
    ``after_s`` (never ``keep``); return their names."""
    answers = nodes.execute([("EVALSHA", FORGET_CONSUMERS, 1, stream, group,
                              int(after_s * 1000), keep) for stream in streams])
    for answer in answers:
        if isinstance(answer, BaseException) and "NOGROUP" not in str(answer):
            raise answer
    return sorted({name for names in answers if isinstance(names, list) for name in names})


class Outage:
    """Backs off while Redis is unreachable, logging one line when it starts
    and one when it ends, rather than a traceback per poll."""

    def __init__(self, group: str, exc: BaseException) -> None:
        self.group = group
        self.started = time.monotonic()
        self.delay = 0.1
        log.warning("%s: redis unreachable (%s); retrying with backoff", group, exc)

    def next_delay(self) -> float:
        delay, self.delay = self.delay, min(self.delay * 2, 2.0)
        return delay

    def over(self) -> None:
        log.warning(
            "%s: redis is back after %.1fs; resuming", self.group, time.monotonic() - self.started
        )
