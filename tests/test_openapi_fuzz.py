"""schemathesis against the API in-process (ASGI), as an operator and as a
customer: every check it has (no 5xx, status codes, content types, headers
and bodies conforming to the OpenAPI document, invalid data refused, valid
data accepted, auth enforced, one customer kept from another's objects), then
its stateful phase, which chains the operations through the links it finds."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import fakeredis
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import CHECKS, load_all_checks

from order_api.models import Customer, Product, to_fields
from shop import keys
from tests.conftest import api_app, make_token

pytestmark = [pytest.mark.unit, pytest.mark.timeout(300)]

SERVER = fakeredis.FakeServer()


def _client() -> fakeredis.FakeAsyncRedis:
    return fakeredis.FakeAsyncRedis(server=SERVER, decode_responses=True)


def _seed() -> dict[str, dict[str, str]]:
    sync = fakeredis.FakeRedis(server=SERVER, decode_responses=True)
    for pk in ("item1", "item2"):
        sync.hset(keys.product(pk), mapping=to_fields(Product(pk=pk, name=pk, price_cents=100,
                                                              stock=10**9)))
    for pk in ("alice", "bob"):
        sync.hset(keys.customer(pk), mapping=to_fields(Customer(
            pk=pk, name=pk, email=f"{pk}@example.com", balance_cents=10**12)))
        sync.zadd(keys.customers_index(), {pk: 0})
    return {
        "operator": {"Authorization": f"Bearer {make_token(_client, 'operator')}"},
        "alice": {"Authorization": f"Bearer {make_token(_client, 'customer', 'alice')}"},
    }


TOKENS = _seed()
_SYNC = fakeredis.FakeRedis(server=SERVER, decode_responses=True)
SEEDED = {key: _SYNC.hgetall(key) for key in _SYNC.keys() if _SYNC.type(key) == "hash"}


def reset() -> None:
    """Back to the seeded catalog, customers and tokens: each stateful scenario
    starts from the same state, so that Hypothesis can replay one exactly."""
    _SYNC.flushall()
    for key, fields in SEEDED.items():
        _SYNC.hset(key, mapping=fields)
    _SYNC.zadd(keys.customers_index(), {"alice": 0, "bob": 0})
    _SYNC.hset(keys.token_names(), mapping={
        fields["name"]: key.rsplit(":", 1)[1] for key, fields in SEEDED.items()
        if key.startswith(keys.token(""))})
load_all_checks()
ALL_CHECKS = [CHECKS.get_one(name) for name in CHECKS.get_all_names()]


def schema_as(who: str) -> Any:
    """The API's schema, its requests made with ``who``'s token (schemathesis
    leaves it out where a check needs it out)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", api_app(_client()))

    @schema.auth()
    class Token:
        def get(self, case: Any, ctx: Any) -> str:
            return TOKENS[who]["Authorization"]

        def set(self, case: Any, data: str, ctx: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": data}

    return schema


as_operator, as_alice = schema_as("operator"), schema_as("alice")
FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def fresh_key(case: Any) -> None:
    """A reused Idempotency-Key with another body is refused on purpose (422, as
    the IETF draft on the header says); the fuzzer draws the same few short keys
    again and again, so each valid case gets a key of its own."""
    key = (case.headers or {}).get("Idempotency-Key")
    if key is not None and case.meta is not None and case.meta.generation.mode.is_positive:
        case.headers["Idempotency-Key"] = f"{key[:160]}-{uuid.uuid4().hex}"


@as_operator.parametrize()
@FUZZ
def test_every_operation_as_an_operator(case: Any) -> None:
    fresh_key(case)
    case.call_and_validate(checks=ALL_CHECKS)


@as_alice.parametrize()
@FUZZ
def test_every_operation_as_a_customer(case: Any) -> None:
    fresh_key(case)
    case.call_and_validate(checks=ALL_CHECKS)


def stateful(schema: Any) -> Any:
    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        steps: Counter[tuple[str, int]] = Counter()

        def setup(self) -> None:
            reset()

        def before_call(self, case: Any) -> None:
            fresh_key(case)

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            self.steps[(case.operation.label, response.status_code)] += 1

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None,
                              **kwargs: Any) -> None:
            case.validate_response(response, checks=ALL_CHECKS, transport_kwargs=kwargs or None,
                                   recorder=getattr(self, "recorder", None))

    return Machine


STATEFUL = settings(max_examples=50, stateful_step_count=8, deadline=None,
                    suppress_health_check=list(HealthCheck))


def test_chained_operations_as_an_operator() -> None:
    """The stateful phase: links found from responses and paths (a product
    created, then read, changed, restocked, deleted; a customer created and
    read), every check on every step."""
    answered = run_stateful(as_operator)
    assert answered["POST /products"] and sum(answered.values()) > 20


def test_chained_operations_as_a_customer() -> None:
    answered = run_stateful(as_alice)
    assert answered["GET /me"] and sum(answered.values()) > 20


def run_stateful(schema: Any) -> Counter[str]:
    """Run the phase; return how many times each operation succeeded (2xx),
    printed with every status it answered."""
    machine = stateful(schema)
    machine.run(settings=STATEFUL)
    print(sorted(machine.steps.items()))
    return Counter({op: n for (op, status), n in machine.steps.items() if 200 <= status < 300})
