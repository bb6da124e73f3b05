"""What flows through a sequence: the message, and how a sequence ends early.

A proxy's message starts as the inbound request (its JSON body, path
parameters, query, headers) and becomes, after the target's call, the
target's answer; a subscription's message starts as the shop's event. The
mediators read and change it; templates see it as ``body``, ``status``,
``headers``, ``vars``, ``params``, ``query``, ``request`` and ``error``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Message:
    body: Any = None
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    vars: dict[str, Any] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    request: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # in a fault sequence: what went wrong
    failed: str | None = None  # and where: the mediator's name, or "target"

    def context(self) -> dict[str, Any]:
        """What templates and conditions see."""
        return {"body": self.body, "status": self.status, "headers": self.headers,
                "vars": self.vars, "params": self.params, "query": self.query,
                "request": self.request, "error": self.error, "failed": self.failed}


class Respond(Exception):  # noqa: N818  # a way out, not an error
    """The sequence answers now, with this (``respond``, ``throttle``)."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or {}


class Drop(Exception):  # noqa: N818
    """The sequence ends here, and the message goes no further (``drop``,
    ``filter``): a proxy answers 204, a subscription stores nothing."""


class Fault(Exception):  # noqa: N818
    """A mediator could not do its part (a template on a message that lacks
    what it names, a body that fails its schema, an endpoint that does not
    answer): the fault sequence runs, with ``error`` set to this and
    ``failed`` to the mediator's name."""

    def __init__(self, error: str, mediator: str | None = None) -> None:
        super().__init__(error)
        self.mediator = mediator
