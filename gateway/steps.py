"""Mediators and sequences: what a step is, and running a list of them.

A mediator is a plain async function and one line that registers it by
name, with the model of its parameters::

    @mediator("log", LogParams)
    async def log_(message: Message, params: LogParams, runtime: Runtime) -> None: ...

In the configuration a step is one mapping, the mediator's name and its
parameters (``log: {message: "order {{ body.id }}"}``), or the bare name of
one that takes none (``drop``). Steps are checked as the configuration is
loaded: an unknown name, or parameters its model refuses, is an error that
says where. A sequence is a list of steps, run in order until one answers
(``Respond``), drops the message (``Drop``) or fails (``Fault``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import PydanticCustomError, core_schema

from gateway.message import Fault, Message
from gateway.templates import TemplateProblem


class Runtime(Protocol):
    """What mediators use of the running gateway."""

    name: str
    log: logging.Logger

    async def send(self, endpoint: str, method: str, path: str, body: Any,
                   headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]: ...

    async def store(self, store: str, body: Any, key: str) -> None: ...

    async def throttle(self, key: str, rate_per_s: float, burst: int) -> bool: ...

    async def run(self, sequence: str, message: Message) -> None: ...


class Params(BaseModel):
    """A mediator's parameters: checked when the configuration is loaded."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True,
                              populate_by_name=True)
    # The parameter a bare value stands for (``sequence: errors``), if any.
    scalar: ClassVar[str | None] = None


Run = Callable[[Message, Any, Runtime], Awaitable[None]]


@dataclass(frozen=True)
class Kind:
    name: str
    params: type[Params]
    run: Run


REGISTRY: dict[str, Kind] = {}


def mediator(name: str, params: type[Params]) -> Callable[[Run], Run]:
    """Register a mediator under ``name``, its parameters checked by ``params``."""
    def register(run: Run) -> Run:
        REGISTRY[name] = Kind(name, params, run)
        return run

    return register


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'parameters'}: {err['msg']}"
                     for err in exc.errors())


@dataclass(frozen=True)
class Step:
    """One mediator with its checked parameters."""

    kind: Kind
    params: Any

    @classmethod
    def __get_pydantic_core_schema__(cls, _source: Any, _handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(cls.parse)

    @classmethod
    def parse(cls, raw: Any) -> Step:
        if isinstance(raw, Step):
            return raw
        given: Any
        if isinstance(raw, str):
            name, given = raw, {}
        elif isinstance(raw, dict) and len(raw) == 1:
            [(name, given)] = raw.items()
        else:
            raise PydanticCustomError(
                "step", "a step is one mediator, `name: {{parameters}}` (e.g. `log: {{message: "
                "hello}}`), or the bare name of one that takes none (`drop`)")
        kind = REGISTRY.get(str(name))
        if kind is None:
            raise PydanticCustomError(
                "unknown_mediator", "unknown mediator '{name}'; the mediators are: {known}",
                {"name": name, "known": ", ".join(sorted(REGISTRY))})
        if given is None:
            given = {}
        elif not isinstance(given, dict):
            if kind.params.scalar is None:
                raise PydanticCustomError("mediator_params", "{name}: its parameters are a "
                                          "mapping", {"name": name})
            given = {kind.params.scalar: given}
        try:
            return cls(kind, kind.params.model_validate(given))
        except (ValidationError, TemplateProblem) as exc:
            detail = _problems(exc) if isinstance(exc, ValidationError) else str(exc)
            raise PydanticCustomError("mediator_params", "{name}: {detail}",
                                      {"name": name, "detail": detail}) from None

    def nested(self) -> Iterator[Step]:
        """The steps inside this one (a switch's cases, a filter's branches), and theirs."""
        yield from _steps_in(self.params)


def _steps_in(value: Any) -> Iterator[Step]:
    if isinstance(value, Step):
        yield value
        yield from value.nested()
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _steps_in(getattr(value, name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _steps_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _steps_in(item)


def every_step(steps: list[Step]) -> Iterator[Step]:
    """Each step of a sequence, nested ones included."""
    for step in steps:
        yield step
        yield from step.nested()


async def run_steps(steps: list[Step], message: Message, runtime: Runtime) -> None:
    """Run a sequence; a template that fails on this message is a ``Fault``."""
    for step in steps:
        try:
            await step.kind.run(message, step.params, runtime)
        except TemplateProblem as exc:
            raise Fault(f"{step.kind.name}: {exc}", step.kind.name) from None
        except Fault as exc:
            if exc.mediator is None:
                exc.mediator = step.kind.name
            raise
