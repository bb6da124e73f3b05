"""Request and response bodies of the HTTP API. Money is integer cents."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from shop.statuses import Status
from shop.topology import SHOP, STORE_NAME, STORE_PREFIX
from streams.topology import DEAD_SUFFIX

# Ids end up inside Redis keys: no colons, no spaces, no braces. The same rule
# for an id in a body, in a path and in an MCP tool's arguments.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
ID_RULE = "1-64 letters, digits, '_', '.', '-'"
Id = Annotated[str, Field(pattern=ID_PATTERN, description=ID_RULE, examples=["item1"])]


def _a_number(value: object) -> object:
    """JSON's integers, 2 and 2.0 alike (JSON Schema's "integer" is both), but
    never "2" or true."""
    if isinstance(value, str | bytes | bool):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


NUMBER = BeforeValidator(_a_number)  # after the bounds, so that OpenAPI shows them
# Bounded so that any order total stays exact in Lua's doubles (< 2**53).
PriceCents = Annotated[int, Field(ge=0, le=100_000_000), NUMBER]
BalanceCents = Annotated[int, Field(ge=0, le=10**13), NUMBER]
Quantity = Annotated[int, Field(ge=1, le=10_000), NUMBER]
Stock = Annotated[int, Field(ge=0, le=1_000_000_000), NUMBER]
OrderStatus = Status


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProductIn(Body):
    id: Id | None = Field(None, description="Given (e.g. item1) or generated.")
    name: str = Field(min_length=1, max_length=200)
    price_cents: PriceCents
    stock: Stock = 0


class ProductPatch(Body):
    # Left out, not null: a field given is a value to set.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})
    name: str = Field(None, min_length=1, max_length=200)  # type: ignore[assignment]
    price_cents: PriceCents = None  # type: ignore[assignment]

    @model_validator(mode="after")
    def _something(self) -> ProductPatch:
        if self.name is None and self.price_cents is None:
            raise ValueError("give name or price_cents (or both)")
        return self


class Restock(Body):
    quantity: Annotated[int, Field(ge=1, le=1_000_000), NUMBER]


class Adjustment(Body):
    delta: Annotated[int, Field(ge=-1_000_000, le=1_000_000,
                                description="Units added (positive) or taken (negative)."),
                     NUMBER]
    reason: Annotated[str, Field(min_length=1, max_length=200,
                                 description="Why, kept with the change.")]


class ProductOut(BaseModel):
    id: str
    name: str
    price_cents: int
    stock: int


class CustomerIn(Body):
    id: Id | None = Field(None, description="Given (e.g. alice) or generated.")
    name: str = Field(min_length=1, max_length=200)
    # No @ or spaces around one @; the class spelled out, as regex engines (and so
    # this API and its OpenAPI readers) disagree on what \s is.
    email: str = Field(pattern=r"^[^@ \t\r\n]+@[^@ \t\r\n]+$", max_length=254)
    balance_cents: BalanceCents = 0


class CustomerOut(BaseModel):
    id: str
    name: str
    email: str
    balance_cents: int


class CustomerPage(BaseModel):
    items: list[CustomerOut]
    total: int
    offset: int
    limit: int
    next_offset: int | None


class LineIn(Body):
    product_id: Id
    quantity: Quantity


class OrderIn(Body):
    customer_id: Id | None = Field(
        None, description="The customer a customer token acts for; another one is refused.")
    lines: list[LineIn] = Field(min_length=1, max_length=50)


class LineOut(BaseModel):
    product_id: str
    quantity: int
    price_cents: int = Field(description="Unit price captured when the order was placed.")


class HistoryEntry(BaseModel):
    type: str
    at: str = Field(description="When the event occurred (UTC).")
    stream: str
    entry_id: str
    event_id: str


class OrderSummary(BaseModel):
    id: str
    customer_id: str
    status: OrderStatus
    reason: str
    total_cents: int
    lines: list[LineOut]
    created_at: str
    updated_at: str


class OrderOut(OrderSummary):
    history: list[HistoryEntry]


class OrderPage(BaseModel):
    items: list[OrderSummary]
    total: int
    offset: int
    limit: int
    next_offset: int | None


class TokenOut(BaseModel):
    name: str
    role: Literal["operator", "customer"]
    customer_id: str | None = Field(description="The customer a customer token acts for.")


class Health(BaseModel):
    status: Literal["ok"]


# -- operations: streams, consumer groups, dead letters -------------------------


class GroupHealth(BaseModel):
    name: str
    consumers: int
    pending: int = Field(description="Read by a consumer and not yet acknowledged.")
    lag: int | None = Field(description="Not yet read; unknown (null) right after a trim.")
    last_delivered_id: str


class StreamHealth(BaseModel):
    name: str
    length: int
    entries_added: int = Field(description="Entries ever added (the length before trimming).")
    last_id: str
    groups: list[GroupHealth]
    dead_letters: int = Field(description="Entries in <name>.dead.")


class EndpointState(BaseModel):
    """One endpoint of a running gateway, as the gateway last said (gateway.endpoints)."""

    gateway: str
    endpoint: str
    url: str = Field(description="Where it sends (without credentials or query).")
    state: Literal["active", "suspended"]
    suspended_until: str | None = Field(description="UTC; when it is tried again.")
    failures: int = Field(description="Failed tries in a row.")
    last_error: str | None
    last_ok_at: str | None = Field(description="UTC; its last answer.")
    sent: int = Field(description="Requests sent since the gateway started.")
    answered: int


class DeadLetterOut(BaseModel):
    ref: str = Field(description="Names it for replay: <stream>.dead/<entry id>.")
    order_id: str
    group: str
    reason: str
    stream: str
    entry_id: str
    deliveries: int
    failed_at: str


# A stream of the flow, and a dead letter's ref in one of their dead-letter streams.
# With partitions, a stream is named with its tag (orders.created{p3}). A
# gateway's message store (gateway.webhooks) is a stream too, its dead letters
# among the others.
_STREAMS = "|".join([*(re.escape(s) for s in SHOP.streams), re.escape(STORE_PREFIX) + STORE_NAME])
_TAG = r"(\{p[0-9]{1,4}\})?"
_DEAD = re.escape(DEAD_SUFFIX)
STREAM_PATTERN = rf"^({_STREAMS}){_TAG}({_DEAD})?$"
DEAD_LETTER_REF = rf"^({_STREAMS}){_TAG}{_DEAD}/[0-9]{{1,19}}-[0-9]{{1,19}}$"


class Replay(Body):
    refs: list[Annotated[str, Field(pattern=DEAD_LETTER_REF)]] = Field(
        min_length=1, max_length=100, examples=[["orders.created.dead/1795240384759-0"]],
        description="Dead letters as GET /ops/dead-letters names them (ref).")


class ReplayOut(BaseModel):
    results: dict[str, str] = Field(description="Per dead letter: its new entry, or why not.")


# -- error answers, as OpenAPI documents them ---------------------------------------


class Problem(BaseModel):
    detail: str = Field(description="What is wrong, and what to do about it.")


class FieldProblem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(Problem):
    errors: list[FieldProblem] = Field(description="Each field that is wrong.")


class UnknownOutcome(Problem):
    outcome: Literal["unknown"]
    order_id: str = Field(description="The order's id, if it was placed.")
    location: str = Field(description="Where the order is, if it was placed.")


_ANSWERS: dict[int, tuple[str, type[BaseModel]]] = {
    400: ("The Host header names no host this API answers for.", Problem),
    401: ("No token, or one that is unknown, revoked or expired "
          "(with WWW-Authenticate: Bearer).", Problem),
    403: ("The token's role or customer may not do this.", Problem),
    404: ("An id names nothing: in the path, or a customer or product in the body.", Problem),
    409: ("The id is taken.", Problem),
    413: ("The body is larger than API_MAX_BODY_BYTES; it was not read.", Problem),
    415: ("The body is not application/json.", Problem),
    422: ("A field, parameter or header is wrong, or not one the route takes; each is "
          "named.", ValidationProblem),
    503: ("The data store is unreachable and nothing was done: try again after "
          "Retry-After seconds.", Problem),
    504: ("The outcome is unknown: the order may have been placed. Do not place it again: "
          "GET its Location, or send the same request with the same Idempotency-Key.",
          UnknownOutcome),
}


def answers(*codes: int, redis: bool = True) -> dict[int | str, dict[str, object]]:
    """The error answers of a route, for its ``responses=``. 400 and 422 come
    with every route (any request can carry a wrong Host, or a query parameter
    the route does not take), and 503 with every route that uses Redis."""
    every = {400, 422, 503} if redis else {400, 422}
    return {code: {"description": _ANSWERS[code][0], "model": _ANSWERS[code][1]}
            for code in sorted(every | set(codes))}
