"""W3C trace context, carried in the envelope from hop to hop.

Every event carries a ``traceparent`` (``00-<trace id>-<span id>-<flags>``,
https://www.w3.org/TR/trace-context/): the API starts a trace for an order
(or continues the caller's, from its ``traceparent`` header), and each hop
that handles an event publishes what follows with the same trace id and its
own span id as the parent. One order's saga is one trace.

The ids are always made and carried (a random number per hop, no system
call), so that every log line about an order can name its trace. Spans are
recorded and exported only when ``configure`` found an OpenTelemetry
exporter to send them to (``OTEL_EXPORTER_OTLP_ENDPOINT``, or a test's
in-memory exporter): off by default, and then no OpenTelemetry code runs.

``current()`` is the context of the hop in hand (a contextvar): the runner
sets it around a handler, the API around a request, and ``Header.new``
stamps the events they publish with it.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


@dataclass(frozen=True, slots=True)
class Context:
    """A hop of a trace: the trace's id and this hop's span id (hex)."""

    trace_id: str
    span_id: str
    flags: str = "01"

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def parse(traceparent: str | None) -> Context | None:
    """The context a ``traceparent`` names; None for a missing or invalid one
    (all-zero ids are invalid, as the W3C says)."""
    if not traceparent:
        return None
    found = _TRACEPARENT.fullmatch(traceparent.strip().lower())
    if found is None or found[1] == _ZERO_TRACE or found[2] == _ZERO_SPAN:
        return None
    return Context(found[1], found[2], found[3])


def _span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


def child(parent: Context | None) -> Context:
    """A new hop after ``parent``: its trace, a span id of its own (a new
    trace when there is no parent)."""
    if parent is None:
        return Context(f"{random.getrandbits(128) or 1:032x}", _span_id())
    return Context(parent.trace_id, _span_id(), parent.flags)


_current: ContextVar[Context | None] = ContextVar("trace", default=None)


def current() -> Context | None:
    """The hop in hand, if any."""
    return _current.get()


@contextmanager
def within(context: Context | None) -> Iterator[None]:
    """Make ``context`` the hop in hand for the block."""
    token = _current.set(context)
    try:
        yield
    finally:
        _current.reset(token)


# -- spans (OpenTelemetry, when configured) ------------------------------------

_tracer: Any = None  # an OpenTelemetry tracer once ``configure`` set one up
_provider: Any = None  # and its provider, to flush at the end


def enabled() -> bool:
    """Whether spans are recorded and exported."""
    return _tracer is not None


def configure(service: str, exporter: Any = None, *, environ: Mapping[str, str] = os.environ,
              batch: bool = True) -> bool:
    """Record spans as ``service`` when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
    ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set, exporting over OTLP/HTTP,
    or to ``exporter`` (a test's in-memory one). Return whether it is on."""
    global _tracer, _provider
    if exporter is None and not (environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
                                 or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        _tracer = None
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # reads the OTEL_EXPORTER_OTLP_* variables itself
    provider = TracerProvider(resource=Resource.create({
        "service.name": environ.get("OTEL_SERVICE_NAME") or service}))
    provider.add_span_processor(BatchSpanProcessor(exporter) if batch
                                else SimpleSpanProcessor(exporter))
    _tracer, _provider = provider.get_tracer("streams"), provider
    where = (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
             or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    log.info("tracing: spans of %s exported to %s", service,
             _shown(where) if where else type(exporter).__name__)
    return True


def _shown(url: str) -> str:
    """An endpoint fit for a log line: no credentials, no query (either may
    hold a key)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def shutdown() -> None:
    """Send the spans still buffered (at a process's end)."""
    global _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    _tracer = _provider = None


@dataclass(slots=True)
class Span:
    """A hop being handled: its context, and the OpenTelemetry span recording
    it (None when spans are off)."""

    context: Context
    recording: Any = None

    def end(self, attributes: Mapping[str, Any] | None = None, error: BaseException | None = None
            ) -> None:
        if self.recording is None:
            return
        from opentelemetry.trace import Status, StatusCode

        if attributes:
            self.recording.set_attributes(dict(attributes))
        if error is not None:
            self.recording.record_exception(error)
            self.recording.set_status(Status(StatusCode.ERROR, str(error)))
        self.recording.end()
        self.recording = None


def start(name: str, parent: Context | None, attributes: Mapping[str, Any], *,
          kind: str = "CONSUMER") -> Span:
    """A new hop after ``parent``, recorded as a span when spans are on."""
    if _tracer is None:
        return Span(child(parent))
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

    context = None
    if parent is not None:
        context = trace.set_span_in_context(NonRecordingSpan(SpanContext(
            int(parent.trace_id, 16), int(parent.span_id, 16), is_remote=True,
            trace_flags=TraceFlags(int(parent.flags, 16)))))
    span = _tracer.start_span(name, context=context, kind=SpanKind[kind],
                              attributes=dict(attributes))
    made = span.get_span_context()
    return Span(Context(f"{made.trace_id:032x}", f"{made.span_id:016x}",
                        f"{int(made.trace_flags):02x}"), span)
