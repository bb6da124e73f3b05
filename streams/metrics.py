"""Prometheus metrics of the bus (prometheus-client), in Prometheus's naming
conventions: a unit in each name, ``_total`` on counters.

In every consumer process (``count``, a middleware, on when the process
serves its metrics: ``serve``):

- ``streams_events_handled_total{group, type, outcome}``: messages handled,
  by what became of them: ``applied`` (the step changed something),
  ``duplicate`` (it had been done: nothing changed), ``acked`` (nothing to
  change), ``retried`` (failed; it will be delivered again), ``waiting``
  (its Redis node is away), ``dead_lettered``;
- ``streams_handler_duration_seconds{group}``: a handler's own time to decide;
- ``streams_commit_duration_seconds{group}``: from the batch's decisions to
  its outcomes applied in Redis, as each message saw it.

Of the flow, read from Redis when scraped (``flow_families``, served by the
API's ``/metrics``, the one process that reads every stream): each stream's
``streams_length_messages`` and ``streams_entries_added_total``, each
group's ``streams_consumer_lag_messages`` and ``streams_pending_messages``,
and ``streams_dead_letters_messages``, by stream and partition.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterable
from typing import Any

from prometheus_client import Counter, Histogram, disable_created_metrics, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from streams.deadletter import DeadLetter
from streams.delivery import Delivery
from streams.envelope import Envelope
from streams.outcomes import Ack, Apply, Reject

log = logging.getLogger(__name__)
# No ``_created`` series beside each counter: noise on a dashboard.
disable_created_metrics()

# Latencies of a few hundred microseconds to seconds (a failover's wait).
FAST_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                0.5, 1.0, 2.5, 5.0)

EVENTS_HANDLED = Counter(
    "streams_events_handled", "Messages handled, by consumer group, event type and outcome "
    "(applied, duplicate, acked, retried, waiting, dead_lettered).",
    ["group", "type", "outcome"])
HANDLER_SECONDS = Histogram(
    "streams_handler_duration_seconds", "A handler's own time to decide what to do with a "
    "message.", ["group"], buckets=FAST_BUCKETS)
COMMIT_SECONDS = Histogram(
    "streams_commit_duration_seconds", "From a batch's decisions to its outcomes applied in "
    "Redis (its Lua steps, dead letters and acknowledgements), per message.", ["group"],
    buckets=FAST_BUCKETS)


def outcome_of(delivery: Delivery) -> str:
    """What became of a message, as ``streams_events_handled_total`` names it."""
    if delivery.waits is not None:
        return "waiting"
    if delivery.error is not None:
        return "retried"
    outcome = delivery.outcome
    if isinstance(outcome, Reject):
        return "dead_lettered"
    if isinstance(outcome, Apply):
        result = delivery.result
        return "duplicate" if isinstance(result, list) and result[:1] == ["duplicate"] \
            else "applied"
    if isinstance(outcome, Ack):
        return "duplicate" if outcome.duplicate else "acked"
    return "unknown"


def type_of(delivery: Delivery) -> str:
    """The event's type, as parsed (so that junk does not make up labels)."""
    event = delivery.event
    if isinstance(event, Envelope):
        return event.type
    if isinstance(event, DeadLetter):
        return "dead_letter"
    return "malformed"


class _Children:
    """Each labelled child made once: ``labels()`` takes a lock and hashes its
    arguments every time."""

    def __init__(self) -> None:
        self.events: dict[tuple[str, str, str], Any] = {}
        self.timings: dict[str, tuple[Any, Any]] = {}

    def event(self, group: str, kind: str, outcome: str) -> Any:
        key = (group, kind, outcome)
        if (child := self.events.get(key)) is None:
            child = self.events[key] = EVENTS_HANDLED.labels(*key)
        return child

    def timing(self, group: str) -> tuple[Any, Any]:
        if (pair := self.timings.get(group)) is None:
            pair = self.timings[group] = (HANDLER_SECONDS.labels(group),
                                          COMMIT_SECONDS.labels(group))
        return pair


_children = _Children()


def count(delivery: Delivery) -> Generator[None, Delivery, None]:
    """Middleware: count the message by outcome, observe its handler's and its
    commit's time."""
    yield
    group = delivery.group
    _children.event(group, type_of(delivery), outcome_of(delivery)).inc()
    handler, commit = _children.timing(group)
    handler.observe(delivery.handler_s)
    commit.observe(delivery.commit_s)


def serve(port: int | None, host: str = "127.0.0.1", who: str = "") -> bool:
    """Serve this process's metrics on ``host:port`` (``/metrics``, from a
    thread); no port, no metrics. A port that is taken is said, not fatal:
    the worker matters more than its numbers."""
    if not port:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("%s: metrics not served: %s:%d: %s", who or "metrics", host, port, exc)
        return False
    log.info("%s: metrics on http://%s:%d/metrics", who or "metrics", host, port)
    return True


# -- the flow, from Redis -------------------------------------------------------


def flow_families(streams: Iterable[Any], split: Any) -> list[Metric]:
    """The flow's metrics from a snapshot of the streams (each with ``name``,
    ``length``, ``entries_added``, ``groups`` (``name``, ``pending``, ``lag``) and
    ``dead_letters``); ``split(name)`` gives a stream's base name and partition."""
    length = GaugeMetricFamily("streams_length_messages", "Entries a stream holds now "
                               "(trimmed to STREAM_RETENTION_S of history).",
                               labels=["stream", "partition"])
    added = CounterMetricFamily("streams_entries_added", "Entries ever added to a stream.",
                                labels=["stream", "partition"])
    lag = GaugeMetricFamily("streams_consumer_lag_messages", "Entries of a stream a consumer "
                            "group has not read yet.", labels=["stream", "partition", "group"])
    pending = GaugeMetricFamily("streams_pending_messages", "Entries a consumer group has read "
                                "and not acknowledged yet.",
                                labels=["stream", "partition", "group"])
    dead = GaugeMetricFamily("streams_dead_letters_messages", "Dead letters kept for a stream "
                             "(in <stream>.dead).", labels=["stream", "partition"])
    for stream in streams:
        base, tag = split(stream.name)
        where = [base, tag.strip("{}") or "-"]
        length.add_metric(where, stream.length)
        added.add_metric(where, stream.entries_added)
        dead.add_metric(where, stream.dead_letters)
        for group in stream.groups:
            pending.add_metric([*where, group.name], group.pending)
            if group.lag is not None:  # unknown after a deletion in the stream: not zero
                lag.add_metric([*where, group.name], group.lag)
    return [length, added, lag, pending, dead]
