"""Middleware the runner applies to every message, in order.

Each is a generator function taking the ``Delivery``: what comes before its
``yield`` runs before the handler, what comes after runs once the outcome is
committed to Redis (or has failed), innermost first. Pass your own in the
``middleware`` list of ``Consumer``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator

from streams import keys
from streams.delivery import Delivery
from streams.outcomes import Ack, Apply, Reject

log = logging.getLogger("streams.handled")


def timing(delivery: Delivery) -> Generator[None, Delivery, None]:
    """Measure the time from the handler's start to the commit of its batch."""
    started = time.perf_counter()
    yield
    delivery.elapsed_ms = (time.perf_counter() - started) * 1000


def log_outcome(delivery: Delivery) -> Generator[None, Delivery, None]:
    """One readable line per message handled, naming the order and what happened."""
    yield
    outcome, group, order = delivery.outcome, delivery.group, delivery.order_id
    if delivery.error is None and not isinstance(outcome, Reject) and not log.isEnabledFor(
        logging.INFO
    ):
        return  # an INFO line nobody reads: don't build it
    extra = {
        "group": group,
        "order_id": order,
        "stream": delivery.stream,
        "entry_id": delivery.entry_id,
        "elapsed_ms": round(delivery.elapsed_ms, 2),
    }
    if delivery.error is not None:
        log.error(
            "%-12s order=%s failed on delivery %d (%s: %s); retrying in %.1fs",
            group, order, delivery.deliveries, type(delivery.error).__name__, delivery.error,
            delivery.retry_in_s,
            extra=extra | {"outcome": "error"},
        )
    elif isinstance(outcome, Apply):
        log.info(
            "%-12s order=%s %s", group, order, outcome.describe(delivery.result),
            extra=extra | {"outcome": "applied"},
        )
    elif isinstance(outcome, Reject):
        log.warning(
            "%-12s order=%s %s %s dead-lettered to %s: %s",
            group, order, delivery.stream, delivery.entry_id, keys.dead(delivery.stream),
            outcome.reason, extra=extra | {"outcome": "dead_letter"},
        )
    elif isinstance(outcome, Ack):
        log.info("%-12s order=%s %s", group, order, outcome.note, extra=extra | {"outcome": "ack"})


# The logger is outermost: its after-part runs last, once timing has measured.
DEFAULT = (log_outcome, timing)
