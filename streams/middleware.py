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

from streams.delivery import Delivery
from streams.outcomes import Ack, Apply, Reject
from streams.topology import dead

log = logging.getLogger("streams.handled")


def timing(delivery: Delivery) -> Generator[None, Delivery, None]:
    """Measure the time from the handler's start to the commit of its batch."""
    started = time.perf_counter()
    yield
    delivery.elapsed_ms = (time.perf_counter() - started) * 1000


def log_outcome(delivery: Delivery) -> Generator[None, Delivery, None]:
    """One readable line per message handled, naming its subject (``order=``)
    and what happened."""
    yield
    outcome, group, label, subject = (delivery.outcome, delivery.group, delivery.label,
                                      delivery.subject)
    if delivery.error is None and not isinstance(outcome, Reject) and not log.isEnabledFor(
        logging.INFO
    ):
        return  # an INFO line nobody reads: don't build it
    extra = {
        "group": group,
        f"{label}_id": subject,
        "stream": delivery.stream,
        "entry_id": delivery.entry_id,
        "elapsed_ms": round(delivery.elapsed_ms, 2),
        "trace_id": delivery.trace_id,
    }
    if delivery.waits is not None:
        log.warning(
            "%-12s %s=%s waits: %s; handled again once it is back",
            group, label, subject, delivery.waits, extra=extra | {"outcome": "waiting"},
        )
    elif delivery.error is not None:
        log.error(
            "%-12s %s=%s failed on delivery %d (%s: %s); retrying in %.1fs",
            group, label, subject, delivery.deliveries, type(delivery.error).__name__,
            delivery.error, delivery.retry_in_s,
            extra=extra | {"outcome": "error"},
        )
    elif isinstance(outcome, Apply):
        log.info(
            "%-12s %s=%s %s", group, label, subject, outcome.describe(delivery.result),
            extra=extra | {"outcome": "applied"},
        )
    elif isinstance(outcome, Reject):
        log.warning(
            "%-12s %s=%s %s %s dead-lettered to %s: %s",
            group, label, subject, delivery.stream, delivery.entry_id, dead(delivery.stream),
            outcome.reason, extra=extra | {"outcome": "dead_letter"},
        )
    elif isinstance(outcome, Ack):
        log.info("%-12s %s=%s %s", group, label, subject, outcome.note,
                 extra=extra | {"outcome": "ack"})


# The logger is outermost: its after-part runs last, once timing has measured.
DEFAULT = (log_outcome, timing)
