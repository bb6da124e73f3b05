"""A gateway's configuration: one YAML file, checked before anything starts.

``${VAR}`` and ``${VAR:-default}`` are taken from the environment first
(or, with ``VAR_FILE`` set instead, from the file it names: a secret mounted
in a container); a variable that is not set and has no default is an error
naming it and its line. Then the file is checked against the models below (pydantic), every
step's mediator and parameters included, and what refers to what: each
endpoint, store and sequence named exists, a group's members are plain
endpoints, no sequence calls itself through others. Every error is one line
naming the file, the line and the place (``legacy-flask.yaml:52:
proxies.orders.routes.0.out.1: unknown mediator 'respnd'; ...``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

import gateway.mediators  # noqa: F401  # registers the built-in mediators
from gateway.mediators import Method, TemplateValue
from gateway.steps import Step, every_step
from gateway.templates import Template
from shop.topology import SHOP, STORE_NAME
from streams.deadletter import DEAD_LETTER_TYPE

BUNDLED = Path(__file__).parent / "configs"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """The configuration cannot be used; the message is one line that says where and why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True,
                              populate_by_name=True)


class Geometric(_Model):
    """A wait that starts at ``initial_s`` and grows by ``factor`` to ``max_s``."""

    initial_s: float = Field(gt=0, le=3600)
    factor: float = Field(2.0, ge=1, le=100)
    max_s: float = Field(gt=0, le=86_400)


class Endpoint(_Model):
    """An HTTP target. An empty ``url`` (a variable not given) leaves it out of
    its groups."""

    url: str
    headers: dict[str, str] = {}
    timeout_s: float = Field(5.0, gt=0, le=300)
    retries: int = Field(2, ge=0, le=20)
    backoff: Geometric = Geometric(initial_s=0.1, factor=2, max_s=2)
    suspend: Geometric = Geometric(initial_s=1, factor=2, max_s=60)

    @field_validator("url")
    @classmethod
    def _http(cls, url: str) -> str:
        if not url:
            return url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
        return url.rstrip("/")


class Group(_Model):
    """Endpoints tried in order (``failover``: the first that is up) or in
    turn (``round_robin``)."""

    failover: list[str] | None = None
    round_robin: list[str] | None = None

    def members(self) -> list[str]:
        return self.failover or self.round_robin or []


def _endpoint_or_group(value: Any) -> str:
    """A group names ``failover`` or ``round_robin``; anything else is checked
    as an endpoint (so its errors are an endpoint's, not both kinds')."""
    if isinstance(value, dict) and ({"failover", "round_robin"} & value.keys()):
        return "group"
    return "endpoint"


EndpointOrGroup = Annotated[Annotated[Endpoint, Tag("endpoint")] | Annotated[Group, Tag("group")],
                            Discriminator(_endpoint_or_group)]


class Target(_Model):
    endpoint: str
    method: Method | None = None  # the route's
    path: TemplateValue | None = None  # the route's path, as the client sent it
    body: TemplateValue | None = None  # the message's body as it is


class Route(_Model):
    method: Method
    path: str = Field(pattern=r"^/")
    in_: list[Step] = Field(default=[], alias="in")
    target: Target | None = None
    out: list[Step] = []
    fault: list[Step] | None = None  # the proxy's, if not given


class Proxy(_Model):
    listen: str = Field(pattern=r"^[^:\s]+:\d{1,5}$", description="host:port")
    routes: list[Route] = Field(min_length=1)
    fault: list[Step] = []
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=64 * 2**20)

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])


class Sign(_Model):
    """An HMAC-SHA256 of ``<timestamp>.<body>`` with ``secret``, sent as
    ``header: t=<timestamp>,v1=<hex>`` (the receiver checks both)."""

    secret: str = Field(min_length=16)
    header: str = "X-Shop-Signature"


class Store(_Model):
    """A message store and its forwarding processor: what is stored is
    delivered to ``endpoint``, at least once, in order per key."""

    endpoint: str
    method: Method = "POST"
    path: TemplateValue = Field(default_factory=lambda: Template(""))
    headers: dict[str, str] = {}
    sign: Sign | None = None
    # A delivery answered with anything but a 2xx is tried again after this
    # back-off (an endpoint that does not answer is suspended: its own
    # suspension decides when it is tried next); after ``max_attempts`` the
    # message is parked in the store's dead letters.
    backoff: Geometric = Geometric(initial_s=1, factor=2, max_s=60)
    max_attempts: int = Field(10, ge=1, le=1000)


class Subscription(_Model):
    """A sequence bound to the shop's events through a consumer group of its own."""

    events: list[str] = Field(min_length=1)
    sequence: list[Step] = Field(min_length=1)


class GatewayConfig(_Model):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,40}$")
    vars: dict[str, Any] = {}
    endpoints: dict[str, EndpointOrGroup] = {}
    sequences: dict[str, list[Step]] = {}
    proxies: dict[str, Proxy] = {}
    subscriptions: dict[str, Subscription] = {}
    stores: dict[str, Store] = {}

    def step_lists(self) -> Iterator[tuple[str, list[Step]]]:
        """Every list of steps, with where it is."""
        for name, steps in self.sequences.items():
            yield f"sequences.{name}", steps
        for name, proxy in self.proxies.items():
            yield f"proxies.{name}.fault", proxy.fault
            for i, route in enumerate(proxy.routes):
                for part in ("in_", "out", "fault"):
                    place = f"proxies.{name}.routes.{i}.{part.rstrip('_')}"
                    yield place, getattr(route, part) or []
        for name, subscription in self.subscriptions.items():
            yield f"subscriptions.{name}.sequence", subscription.sequence


def substitute(text: str, environ: dict[str, str], source: str) -> str:
    """``${VAR}`` and ``${VAR:-default}`` from ``environ``, line by line; or,
    when ``VAR_FILE`` is set instead, the content of the file it names."""
    lines = []
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        def value(found: re.Match[str], number: int = number) -> str:
            name, default = found[1], found[2]
            if name in environ:
                return environ[name]
            if f"{name}_FILE" in environ:  # a secret in a file (Docker's convention)
                try:
                    return Path(environ[f"{name}_FILE"]).read_text().strip()
                except OSError as exc:
                    raise ConfigError(f"{source}:{number}: ${{{name}}}: {name}_FILE "
                                      f"{environ[f'{name}_FILE']}: {exc.strerror}") from None
            if default is not None:
                return default
            raise ConfigError(f"{source}:{number}: ${{{name}}} is not set, and has no default "
                              f"(write ${{{name}:-default}} for one)")
        lines.append(_VARIABLE.sub(value, line))
    return "".join(lines)


def _lines(node: yaml.Node, path: tuple[str, ...] = (),
           line: int | None = None) -> Iterator[tuple[tuple[str, ...], int]]:
    """Each place of a YAML document, as a path, with its line (a mapping's
    entry: the line of its key)."""
    yield path, line or node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _lines(value, (*path, str(key.value)), key.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _lines(item, (*path, str(i)))


def load(path: Path | str, environ: dict[str, str] | None = None) -> GatewayConfig:
    """Read, substitute and check a configuration (a path, or the name of a
    bundled one: ``legacy-flask.yaml``)."""
    where = Path(path)
    if not where.is_file() and (BUNDLED / where.name).is_file() and where.parent == Path("."):
        where = BUNDLED / where.name
    source = where.name
    try:
        text = where.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror}); the bundled ones are "
                          f"{', '.join(sorted(p.name for p in BUNDLED.glob('*.yaml')))}") from None
    text = substitute(text, dict(os.environ if environ is None else environ), source)
    try:
        node = yaml.compose(text)
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{source}{line}: not YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a gateway's configuration is a mapping (name:, "
                          "proxies:, ...)")
    lines = dict(_lines(node)) if node is not None else {}
    try:
        config = GatewayConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(str(p) for p in err["loc"] if p not in ("endpoint", "group"))
        at = max((lines.get(loc[:n], 0) for n in range(len(loc) + 1)), default=0)
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ConfigError(f"{source}:{at}: {'.'.join(loc) or 'top'}: {err['msg']}{more}") \
            from None
    problem = _references(config)
    if problem:
        place, message = problem
        at = lines.get(tuple(place.split(".")), 0)
        raise ConfigError(f"{source}:{at}: {place}: {message}")
    return config


def _references(config: GatewayConfig) -> tuple[str, str] | None:
    """The first thing named that does not exist, or a sequence cycle."""
    endpoints, stores, sequences = config.endpoints, config.stores, config.sequences
    for name, endpoint in endpoints.items():
        if isinstance(endpoint, Group):
            if bool(endpoint.failover) == bool(endpoint.round_robin):
                return f"endpoints.{name}", "a group is `failover: [...]` or `round_robin: [...]`"
            for member in endpoint.members():
                if not isinstance(endpoints.get(member), Endpoint):
                    return (f"endpoints.{name}", f"{member!r} is not an endpoint with a url "
                            f"(the endpoints are: {', '.join(endpoints)})")
    for place, steps in config.step_lists():
        for step in every_step(steps):
            for field, known in (("endpoint", endpoints), ("store", stores),
                                 ("name", sequences if step.kind.name == "sequence" else None)):
                wanted = getattr(step.params, field, None)
                if known is not None and wanted is not None and wanted not in known:
                    what = {"endpoint": "endpoint", "store": "store", "name": "sequence"}[field]
                    return place, (f"{step.kind.name}: no {what} named {wanted!r} (there are: "
                                   f"{', '.join(known) or 'none'})")
    for name, proxy in config.proxies.items():
        for i, route in enumerate(proxy.routes):
            if route.target and route.target.endpoint not in endpoints:
                return (f"proxies.{name}.routes.{i}.target",
                        f"no endpoint named {route.target.endpoint!r}")
    for name, store in stores.items():
        if not re.fullmatch(STORE_NAME, name):
            return f"stores.{name}", "a store's name is lowercase letters, digits and '-'"
        if store.endpoint not in endpoints:
            return f"stores.{name}", f"no endpoint named {store.endpoint!r}"
    events = [e.name for e in SHOP.events] + [DEAD_LETTER_TYPE]
    for name, subscription in config.subscriptions.items():
        if not re.fullmatch(STORE_NAME, name):
            return (f"subscriptions.{name}", "a subscription's name is lowercase letters, "
                    "digits and '-'")
        for i, event in enumerate(subscription.events):
            if event not in events:
                return (f"subscriptions.{name}.events.{i}", f"no event {event!r}; the shop's "
                        f"are: {', '.join(events)}")
    return _cycle(config)


def _cycle(config: GatewayConfig) -> tuple[str, str] | None:
    calls = {name: {s.params.name for s in every_step(steps) if s.kind.name == "sequence"}
             for name, steps in config.sequences.items()}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> list[str] | None:
        if state.get(name) == "done":
            return None
        if state.get(name) == "open":
            return trail[trail.index(name):] + [name]
        state[name] = "open"
        for callee in sorted(calls.get(name, ())):
            if (found := visit(callee, [*trail, name])) is not None:
                return found
        state[name] = "done"
        return None

    for name in calls:
        if (loop := visit(name, [])) is not None:
            return f"sequences.{loop[0]}", "sequences call each other in a circle: " + \
                " → ".join(loop)
    return None

