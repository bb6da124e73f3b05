"""The built-in mediators, each a function and a line that registers it.

| mediator | what it does |
| --- | --- |
| ``log`` | one log line, a template |
| ``filter`` | ``if`` a condition: go on, else drop the message (or run ``then``/``else``) |
| ``switch`` | the steps of the first case whose ``when`` holds, else ``default`` |
| ``transform`` | set the body, headers, status or vars from templates |
| ``map`` | each item of a list in a new form: a list, or a mapping by ``key`` |
| ``validate`` | the body against a JSON Schema; a failure is a fault naming the field |
| ``call`` | send the message to an endpoint; its answer becomes the message |
| ``enrich`` | call an endpoint and keep its answer in ``vars.<into>`` |
| ``wait`` | call an endpoint until a condition holds on its answer (bounded) |
| ``throttle`` | a token bucket per key, kept in Redis: over it, answer 429 |
| ``store`` | put the message in a message store, to be forwarded |
| ``respond`` | answer now |
| ``drop`` | end here: nothing answered (204), nothing stored |
| ``sequence`` | run a named sequence |
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Literal

import jsonschema
from pydantic import BeforeValidator, Field, field_validator

from gateway.message import Drop, Fault, Message, Respond
from gateway.steps import Params, Runtime, Step, mediator, run_steps
from gateway.templates import Expression, Template


def _template(value: Any) -> Template:
    return value if isinstance(value, Template) else Template(value)


def _expression(value: Any) -> Expression:
    return value if isinstance(value, Expression) else Expression(str(value))


TemplateValue = Annotated[Template, BeforeValidator(_template)]
Condition = Annotated[Expression, BeforeValidator(_expression)]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
Steps = list[Step]


class LogParams(Params):
    message: TemplateValue
    level: Literal["info", "warning"] = "info"
    scalar: ClassVar[str | None] = "message"


@mediator("log", LogParams)
async def log_(message: Message, params: LogParams, runtime: Runtime) -> None:
    text = params.message.render(message.context())
    runtime.log.log(logging.INFO if params.level == "info" else logging.WARNING, "%s", text)


class FilterParams(Params):
    if_: Condition = Field(alias="if")
    then: Steps = []
    else_: Steps = Field(default=[], alias="else")


@mediator("filter", FilterParams)
async def filter_(message: Message, params: FilterParams, runtime: Runtime) -> None:
    holds = params.if_.holds(message.context())
    if not (params.then or params.else_):
        if not holds:
            raise Drop()
        return
    await run_steps(params.then if holds else params.else_, message, runtime)


class Case(Params):
    when: Condition
    do: Steps


class SwitchParams(Params):
    cases: list[Case]
    default: Steps = []


@mediator("switch", SwitchParams)
async def switch(message: Message, params: SwitchParams, runtime: Runtime) -> None:
    context = message.context()
    chosen = next((case.do for case in params.cases if case.when.holds(context)), params.default)
    await run_steps(chosen, message, runtime)


class TransformParams(Params):
    body: TemplateValue | None = None
    vars: dict[str, TemplateValue] = {}
    headers: dict[str, TemplateValue] = {}
    status: TemplateValue | None = None


@mediator("transform", TransformParams)
async def transform(message: Message, params: TransformParams, runtime: Runtime) -> None:
    context = message.context()  # every template sees the message as it came in
    if params.body is not None:
        message.body = params.body.render(context)
    for name, value in params.vars.items():
        message.vars[name] = value.render(context)
    for name, value in params.headers.items():
        message.headers[name] = str(value.render(context))
    if params.status is not None:
        message.status = int(params.status.render(context))


class MapParams(Params):
    over: Condition  # a list
    as_: str = Field("item", alias="as", pattern=r"^[a-z_][a-z0-9_]*$")
    to: TemplateValue  # each item's new form; sees ``<as>`` beside the message
    key: Condition | None = None  # given: a mapping ``key -> to``, not a list
    into: str = Field("body", pattern=r"^(body|vars\.[a-z_][a-z0-9_]*)$")


@mediator("map", MapParams)
async def map_(message: Message, params: MapParams, runtime: Runtime) -> None:
    """Each item of a list in a new form: a list, or with ``key`` a mapping."""
    context = message.context()
    items = params.over(context)
    if isinstance(items, str | bytes | dict) or not isinstance(items, Iterable):
        raise Fault(f"map: {params.over.source!r} is not a list")
    shaped: Any = {} if params.key is not None else []
    for item in items:
        seen = {**context, params.as_: item}
        if params.key is not None:
            shaped[str(params.key(seen))] = params.to.render(seen)
        else:
            shaped.append(params.to.render(seen))
    if params.into == "body":
        message.body = shaped
    else:
        message.vars[params.into.removeprefix("vars.")] = shaped


class ValidateParams(Params):
    schema_: dict[str, Any] = Field(alias="schema")

    @field_validator("schema_")
    @classmethod
    def _a_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        try:
            jsonschema.Draft202012Validator.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"not a JSON Schema: {exc.message}") from None
        return schema


@mediator("validate", ValidateParams)
async def validate(message: Message, params: ValidateParams, runtime: Runtime) -> None:
    validator = jsonschema.Draft202012Validator(params.schema_)
    error = next(iter(sorted(validator.iter_errors(message.body), key=lambda e: e.path)), None)
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "body"
        raise Fault(f"{where}: {error.message}")


class CallParams(Params):
    endpoint: str
    method: Method | None = None  # None: the inbound request's, else POST
    path: TemplateValue = Field(default_factory=lambda: Template(""))
    body: TemplateValue | None = None  # None: the message's body as it is
    headers: dict[str, TemplateValue] = {}


async def _call(message: Message, params: CallParams,
                runtime: Runtime) -> tuple[int, Any, dict[str, str]]:
    context = message.context()
    method = params.method or message.request.get("method") or "POST"
    body = message.body if params.body is None else params.body.render(context)
    headers = {name: str(value.render(context)) for name, value in params.headers.items()}
    return await runtime.send(params.endpoint, method, str(params.path.render(context)),
                              None if method in ("GET", "DELETE") else body, headers)


@mediator("call", CallParams)
async def call(message: Message, params: CallParams, runtime: Runtime) -> None:
    message.status, message.body, message.headers = await _call(message, params, runtime)


class EnrichParams(CallParams):
    method: Method | None = "GET"
    into: str


@mediator("enrich", EnrichParams)
async def enrich(message: Message, params: EnrichParams, runtime: Runtime) -> None:
    status, body, _ = await _call(message, params, runtime)
    if not 200 <= status < 300:
        raise Fault(f"enrich from {params.endpoint}: answered {status}: {body}")
    message.vars[params.into] = body


class WaitParams(CallParams):
    method: Method | None = "GET"
    until: Condition
    timeout_s: float = Field(10.0, gt=0, le=300)
    every_ms: int = Field(50, ge=1, le=60_000)


@mediator("wait", WaitParams)
async def wait(message: Message, params: WaitParams, runtime: Runtime) -> None:
    """Call until ``until`` holds on the answer; a bounded wait for a state."""
    deadline = time.monotonic() + params.timeout_s
    while True:
        status, body, headers = await _call(message, params, runtime)
        answer = Message(body=body, status=status, headers=headers, vars=message.vars,
                         params=message.params, query=message.query, request=message.request)
        if params.until.holds(answer.context()):
            message.status, message.body, message.headers = status, body, headers
            return
        if time.monotonic() >= deadline:
            raise Fault(f"wait: {params.until.source!r} did not hold within {params.timeout_s:g}s"
                        f" (last answer {status}: {body})")
        await asyncio.sleep(params.every_ms / 1000)


class ThrottleParams(Params):
    key: Condition
    rate_per_s: float = Field(gt=0, le=1_000_000)
    burst: int = Field(1, ge=1, le=1_000_000)
    status: int = Field(429, ge=400, le=599)
    body: TemplateValue = Field(default_factory=lambda: Template(
        {"error": "too many requests; try again shortly"}))


@mediator("throttle", ThrottleParams)
async def throttle(message: Message, params: ThrottleParams, runtime: Runtime) -> None:
    context = message.context()
    if not await runtime.throttle(str(params.key(context)), params.rate_per_s, params.burst):
        raise Respond(params.status, params.body.render(context), {"Retry-After": "1"})


class StoreParams(Params):
    store: str
    key: Condition | None = None  # None: the event's order (``request.order_id``)
    scalar: ClassVar[str | None] = "store"


@mediator("store", StoreParams)
async def store(message: Message, params: StoreParams, runtime: Runtime) -> None:
    """The message's body into a store, under its key: delivered in order with
    the others of that key."""
    key = (params.key(message.context()) if params.key is not None
           else message.request.get("order_id"))
    if not key:
        raise Fault(f"store: no key for {params.store!r}: this message is not an event about "
                    "an order; give the step a `key:`")
    await runtime.store(params.store, message.body, str(key))


class RespondParams(Params):
    status: int = Field(200, ge=100, le=599)
    body: TemplateValue | None = None  # None: the message's body as it is
    headers: dict[str, TemplateValue] = {}


@mediator("respond", RespondParams)
async def respond(message: Message, params: RespondParams, runtime: Runtime) -> None:
    context = message.context()
    body = message.body if params.body is None else params.body.render(context)
    raise Respond(params.status, body,
                  {name: str(value.render(context)) for name, value in params.headers.items()})


class DropParams(Params):
    pass


@mediator("drop", DropParams)
async def drop(message: Message, params: DropParams, runtime: Runtime) -> None:
    raise Drop()


class SequenceParams(Params):
    name: str
    scalar: ClassVar[str | None] = "name"


@mediator("sequence", SequenceParams)
async def sequence(message: Message, params: SequenceParams, runtime: Runtime) -> None:
    await runtime.run(params.name, message)
