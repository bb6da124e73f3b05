"""Templates and conditions in a gateway's configuration: Jinja2 expressions.

A **template** is JSON (written as YAML) whose strings may hold ``{{ ... }}``::

    body: {customer_id: "{{ vars.walk_in }}",
           lines: [{product_id: "{{ body.item }}", quantity: "{{ body.quantity }}"}]}

A string that is one expression keeps the expression's type (``quantity``
stays a number, a list stays a list); a string with text around its
expressions is text (``"Inventory for {{ params.item }} updated"``).
A **condition** (``when:``, ``if:``, ``until:``) and a **key** are one bare
expression: ``status == 404``, ``body.status in ["completed", "refunded"]``.

What an expression sees: ``body`` (the message's JSON), ``status`` (the last
answer's), ``headers``, ``vars`` (what earlier mediators put there),
``params`` (the route's path parameters), ``query``, ``request`` (the
inbound request, or the event), ``error`` (in a fault sequence).

Why Jinja2, and its native-types environment: well kept (Pallets), known to
most, sandboxed here (a template can read the message, not call into
Python); its native mode gives back values, not only text, which is what
templated JSON needs. JMESPath, the other candidate, queries JSON well but
cannot put text around values. A name that is not there is an error (the
fault sequence's), never an empty string passed on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import chain, islice
from typing import Any

from jinja2 import StrictUndefined, TemplateError, Undefined
from jinja2.nativetypes import NativeCodeGenerator
from jinja2.sandbox import ImmutableSandboxedEnvironment


def _concat(values: Iterable[Any]) -> Any:
    """One expression alone: its value as it is (Jinja2's own native concat
    would read a string that looks like a number as one: "123" -> 123, an id
    no more). Anything more: text."""
    head = list(islice(values, 2))
    if not head:
        return ""
    if len(head) == 1:
        if isinstance(head[0], Undefined):
            head[0]._fail_with_undefined_error()  # noqa: SLF001  # StrictUndefined raises
        return head[0]
    return "".join(str(value) for value in chain(head, values))


class _Environment(ImmutableSandboxedEnvironment):
    code_generator_class = NativeCodeGenerator
    concat = staticmethod(_concat)  # type: ignore[assignment]

    def getattr(self, obj: Any, attribute: str) -> Any:
        """``body.items`` is the body's ``items``, not ``dict.items``: a
        message is JSON, so a mapping's keys come before its methods."""
        if isinstance(obj, Mapping) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)


_ENV = _Environment(undefined=StrictUndefined, autoescape=False)


class TemplateProblem(ValueError):
    """A template or condition that does not compile, or fails on a message."""


class Template:
    """A value (mapping, list, string, number...) whose strings may hold
    expressions; compiled once, rendered per message."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self._compiled = _compile(value)

    def render(self, context: Mapping[str, Any]) -> Any:
        try:
            return _render(self._compiled, context)
        except TemplateError as exc:
            raise TemplateProblem(f"template: {exc}") from None
        except (TypeError, ValueError, LookupError, ArithmeticError) as exc:
            raise TemplateProblem(f"template: {type(exc).__name__}: {exc}") from None


class Expression:
    """One bare expression: a condition, a key."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._compiled = _ENV.compile_expression(source, undefined_to_none=False)
        except TemplateError as exc:
            raise TemplateProblem(f"expression {source!r}: {exc}") from None

    def __call__(self, context: Mapping[str, Any]) -> Any:
        try:
            return self._compiled(**context)
        except TemplateError as exc:
            raise TemplateProblem(f"{self.source!r}: {exc}") from None
        except (TypeError, ValueError, LookupError, ArithmeticError) as exc:
            raise TemplateProblem(f"{self.source!r}: {type(exc).__name__}: {exc}") from None

    def holds(self, context: Mapping[str, Any]) -> bool:
        return bool(self(context))


class _Text:
    __slots__ = ("template",)

    def __init__(self, source: str) -> None:
        try:
            self.template = _ENV.from_string(source)
        except TemplateError as exc:
            raise TemplateProblem(f"template {source!r}: {exc}") from None


def _compile(value: Any) -> Any:
    if isinstance(value, str):
        return _Text(value) if ("{{" in value or "{%" in value) else value
    if isinstance(value, Mapping):
        return {key: _compile(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_compile(item) for item in value]
    return value


def _render(compiled: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(compiled, _Text):
        return compiled.template.render(**context)
    if isinstance(compiled, dict):
        return {key: _render(item, context) for key, item in compiled.items()}
    if isinstance(compiled, list):
        return [_render(item, context) for item in compiled]
    return compiled
