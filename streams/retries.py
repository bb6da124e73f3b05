"""What a consumer will handle again, and when: its own messages whose handler
raised (after a backoff that doubles, ``recovery.backoff_s``), and messages
that wait behind a closed gate (``streams.gates``), once it opens.

Kept in memory only: after a crash the messages are still pending in Redis,
and XAUTOCLAIM finds them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from streams.gates import Gates


@dataclass(slots=True)
class Later:
    """Claim back at ``at`` (monotonic), if idle ``idle_ms`` (else another
    consumer took it meanwhile), once the gate of ``gate`` (a key) is open."""

    at: float
    idle_ms: int
    gate: str | None = None


class Retries:
    def __init__(self, gates: Gates) -> None:
        self.gates = gates
        self._later: dict[tuple[str, str], Later] = {}

    def __len__(self) -> int:
        return len(self._later)

    def after(self, stream: str, entry_id: str, wait_s: float) -> None:
        """Handle again in ``wait_s``, if no other consumer took it meanwhile."""
        self._later[(stream, entry_id)] = Later(time.monotonic() + wait_s, int(wait_s * 1000))

    def behind(self, stream: str, entry_id: str, key: str, cause: BaseException) -> None:
        """Handle again once the gate of ``key``'s slot, closed for ``cause``, opens."""
        self.gates.close(key, cause)
        self._later[(stream, entry_id)] = Later(time.monotonic(), 0, key)

    def _open(self, later: Later) -> bool:
        return not (later.gate and self.gates.waits(later.gate))

    def due(self, now: float | None) -> list[tuple[str, str, int]]:
        """Take out the messages due (every one not behind a gate when ``now``
        is None): (stream, entry id, the idle time their claim requires)."""
        found = [(key, later) for key, later in self._later.items()
                 if (now is None or later.at <= now) and self._open(later)]
        for key, _ in found:
            del self._later[key]
        return [(stream, entry_id, 0 if now is None else later.idle_ms)
                for (stream, entry_id), later in found]

    def ready(self) -> bool:
        """Whether one waits that is not behind a gate."""
        return any(self._open(later) for later in self._later.values())

    def next_at(self) -> float:
        """When the next backoff ends (inf: none waits for a time)."""
        return min((later.at for later in self._later.values() if not later.gate),
                   default=float("inf"))
