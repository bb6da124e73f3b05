"""An order's statuses and their ranks: the one definition (Python, Lua, OpenAPI).

    pending -> paid -> completed | refunded
    pending -> rejected (payment declined)
    any     -> failed (a message about it was dead-lettered)

A status only ever moves to a higher rank. ``failed`` ranks below the other
final statuses so that a dead letter replayed successfully can still finish
its order; a late event never moves an order back.
"""

from __future__ import annotations

from typing import Literal, get_args

Status = Literal["pending", "paid", "failed", "completed", "rejected", "refunded"]
STATUSES: tuple[str, ...] = get_args(Status)
RANK = {"pending": 0, "paid": 1, "failed": 2, "completed": 3, "rejected": 3, "refunded": 3}
# The rank of the statuses that end a saga (``failed`` ends it too, unless a
# replay finishes the order).
DONE_RANK = 3
# An order in one of these has reached the end of its saga.
FINAL_STATUSES = frozenset({"failed", *(s for s in STATUSES if RANK[s] >= DONE_RANK)})


def lua_ranks() -> str:
    """``RANK`` as a Lua table literal, for a script's source."""
    return "{" + ", ".join(f"{status} = {RANK[status]}" for status in STATUSES) + "}"
