"""Endpoints: where a gateway sends, and what it does when they fail.

An endpoint sends a request and waits up to ``timeout_s``. A timeout, a
connection refused or a 5xx is a failure: it tries again ``retries`` times,
after a back-off that starts at ``backoff.initial_s`` and grows by
``backoff.factor`` up to ``backoff.max_s``. When every try failed the
endpoint is **suspended** for ``suspend.initial_s``, then
``suspend.factor`` times longer after each failure, up to ``suspend.max_s``:
meanwhile nothing is sent to it. After its suspension, the next request is
a trial: an answer makes it active again (and its suspension short again), a
failure suspends it for longer. A 4xx is an answer, not a failure: the
endpoint is up, the request was wrong.

A group sends to its members: ``failover``, the first in order that is not
suspended (so it switches to the second when the first fails, and back once
the first's suspension is over and its trial answers); ``round_robin``,
each in turn, skipping suspended ones.

Each endpoint's state (active or suspended, until when, failures, the last
error) is kept in Redis (``keys.gateway_endpoints``) for ``/ops/endpoints``
and the ops MCP server.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2

from gateway.config import Endpoint as EndpointConfig
from gateway.config import Group as GroupConfig
from gateway.metrics import ENDPOINT_ACTIVE, ENDPOINT_REQUESTS
from streams.envelope import utc_now

log = logging.getLogger("gateway.endpoints")


class Unavailable(Exception):  # noqa: N818
    """No answer from an endpoint (or from any member of a group): every try
    failed, or it is suspended."""


@dataclass
class State:
    endpoint: str
    url: str
    state: str = "active"  # or "suspended"
    suspended_until: str | None = None
    failures: int = 0  # in a row
    last_error: str | None = None
    last_ok_at: str | None = None
    sent: int = 0
    answered: int = 0


class Endpoint:
    def __init__(self, name: str, config: EndpointConfig, client: httpx2.AsyncClient,
                 changed: Any = None) -> None:
        self.name, self.config, self.client = name, config, client
        self.state = State(name, shown(config.url))
        self._until = 0.0  # monotonic end of the suspension
        self._suspend_s = config.suspend.initial_s
        self._changed = changed or (lambda _endpoint: None)
        if self.enabled:
            ENDPOINT_ACTIVE.labels(name).set(1)

    @property
    def enabled(self) -> bool:
        return bool(self.config.url)

    @property
    def suspended(self) -> bool:
        return self._until > time.monotonic()

    def suspended_for(self) -> float:
        return max(0.0, self._until - time.monotonic())

    async def send(self, method: str, path: str, body: Any,
                   headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        """Send ``body`` (bytes as they are, anything else as JSON); the answer
        (status, JSON body or text, headers), or ``Unavailable`` after every try."""
        if not self.enabled:
            raise Unavailable(f"{self.name}: no url configured")
        if self.suspended:
            raise Unavailable(f"{self.name}: suspended for {self.suspended_for():.1f}s more "
                              f"after {self.state.failures} failure(s): {self.state.last_error}")
        wait = self.config.backoff.initial_s
        error = ""
        for attempt in range(self.config.retries + 1):
            if attempt:
                await asyncio.sleep(wait)
                wait = min(wait * self.config.backoff.factor, self.config.backoff.max_s)
            self.state.sent += 1
            try:
                answer = await self.client.request(
                    method, self.config.url + path, headers={**self.config.headers, **headers},
                    timeout=self.config.timeout_s,
                    **({"content": body} if isinstance(body, bytes) else {"json": body}))
            except httpx2.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                ENDPOINT_REQUESTS.labels(self.name, "failed").inc()
                continue
            if answer.status_code >= 500:
                error = f"answered {answer.status_code}"
                ENDPOINT_REQUESTS.labels(self.name, "failed").inc()
                continue
            ENDPOINT_REQUESTS.labels(self.name, "answered").inc()
            self._ok()
            try:
                content = answer.json()
            except ValueError:
                content = answer.text
            return answer.status_code, content, dict(answer.headers)
        self._failed(error)
        raise Unavailable(f"{self.name}: {error} ({self.config.retries + 1} tries)")

    def _ok(self) -> None:
        was = self.state.state
        self._until = 0.0
        self._suspend_s = self.config.suspend.initial_s
        self.state.state, self.state.suspended_until = "active", None
        ENDPOINT_ACTIVE.labels(self.name).set(1)
        self.state.failures, self.state.answered = 0, self.state.answered + 1
        self.state.last_ok_at = utc_now()
        if was != "active":
            log.info("gateway      endpoint %s answers again: active", self.name)
            self._changed(self)

    def _failed(self, error: str) -> None:
        self.state.failures += 1
        self.state.last_error = error
        suspend = self._suspend_s
        self._suspend_s = min(suspend * self.config.suspend.factor, self.config.suspend.max_s)
        self._until = time.monotonic() + suspend
        self.state.state = "suspended"
        ENDPOINT_ACTIVE.labels(self.name).set(0)
        self.state.suspended_until = _utc_in(suspend)
        log.warning("gateway      endpoint %s failed (%s): suspended for %.1fs", self.name,
                    error, suspend)
        self._changed(self)


class Group:
    """Members tried in order (failover) or in turn (round robin)."""

    def __init__(self, name: str, config: GroupConfig, members: list[Endpoint]) -> None:
        self.name, self.config = name, config
        self.members = [m for m in members if m.enabled]
        self._turn = itertools.count()

    async def send(self, method: str, path: str, body: Any,
                   headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        if not self.members:
            raise Unavailable(f"{self.name}: no member has a url")
        order = list(self.members)
        if self.config.round_robin:
            start = next(self._turn) % len(order)
            order = order[start:] + order[:start]
        up = [m for m in order if not m.suspended]
        problems = []
        for member in up:
            try:
                return await member.send(method, path, body, headers)
            except Unavailable as exc:
                problems.append(str(exc))
        soonest = min(order, key=lambda m: m.suspended_for())
        raise Unavailable(f"{self.name}: " + ("; ".join(problems) or
                          f"every member suspended, {soonest.name} for "
                          f"{soonest.suspended_for():.1f}s more"))

    def suspended_for(self) -> float:
        """How long until some member may be tried again (0: one may now)."""
        return min((m.suspended_for() for m in self.members), default=0.0)


def shown(url: str) -> str:
    """A URL as operators see it: without credentials or query (which may hold secrets)."""
    if not url:
        return ""
    parts = urlsplit(url)
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or ""
    return urlunsplit((parts.scheme, f"{host}:{parts.port}" if parts.port else host,
                       parts.path, "", ""))


def _utc_in(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + seconds))


def states(endpoints: dict[str, Endpoint]) -> dict[str, str]:
    """Each endpoint's state as JSON, for Redis."""
    return {name: json.dumps(asdict(e.state)) for name, e in endpoints.items()}
