"""Logging for people watching a terminal, or JSON on request (LOG_FORMAT=json).

Both go to stderr, in UTC. Text: ``05:01:02 INFO    payment   order=… charged …
trace=4bf9…``: a line about an order names it, and its trace (``streams.tracing``),
given as ``extra={"trace_id": …}`` or taken from the hop in hand. JSON keeps
both as fields (``order_id``, ``trace_id``).
"""

from __future__ import annotations

import json
import logging
import sys
import time

from streams import tracing

# Attributes a LogRecord always has; anything else came in through ``extra``.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.created % 1 * 1000):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``05:01:02 INFO    <message>  trace=<trace id>`` (the trace when the
    line has one), in UTC."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")
        self.converter = time.gmtime

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        text = super().formatMessage(record)
        trace = getattr(record, "trace_id", "")
        return f"{text}  trace={trace}" if trace else text


def with_trace(record: logging.LogRecord) -> bool:
    """A filter: a line logged while a hop is in hand names its trace."""
    if not getattr(record, "trace_id", "") and (hop := tracing.current()) is not None:
        record.trace_id = hop.trace_id
    return True


def configure(log_format: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(with_trace)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
