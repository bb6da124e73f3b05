"""The mediators, one by one, on messages: what each does to the message, and
how each ends a sequence (an answer, a drop, a fault that names it).

The runtime here is a recorder: what a mediator asks of the running gateway
(send, store, take a token, run a sequence) is written down and answered as
the test says. The real runtime, its endpoints and its Redis are tested in
test_gateway_endpoints.py and test_gateway_store.py.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

import gateway.mediators  # noqa: F401  # registers the built-in mediators
from gateway.message import Drop, Fault, Message, Respond
from gateway.steps import Step, run_steps

pytestmark = pytest.mark.unit


@dataclass
class Recorder:
    """A runtime that writes down what it is asked, and answers from ``answers``."""

    answers: list[tuple[int, Any]] = field(default_factory=list)
    tokens: list[bool] = field(default_factory=list)
    sequences: dict[str, list[Step]] = field(default_factory=dict)
    sent: list[tuple[str, str, str, Any, dict[str, str]]] = field(default_factory=list)
    stored: list[tuple[str, Any, str]] = field(default_factory=list)
    throttled: list[tuple[str, float, int]] = field(default_factory=list)
    name: str = "test"
    log: logging.Logger = logging.getLogger("gateway.test")

    async def send(self, endpoint: str, method: str, path: str, body: Any,
                   headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        self.sent.append((endpoint, method, path, body, headers))
        status, answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return status, answer, {"content-type": "application/json"}

    async def store(self, store: str, body: Any, key: str) -> None:
        self.stored.append((store, body, key))

    async def throttle(self, key: str, rate_per_s: float, burst: int) -> bool:
        self.throttled.append((key, rate_per_s, burst))
        return self.tokens.pop(0)

    async def run(self, sequence: str, message: Message) -> None:
        await run_steps(self.sequences[sequence], message, self)


def steps(text: str) -> list[Step]:
    return [Step.parse(raw) for raw in yaml.safe_load(text)]


def run(text: str, message: Message, runtime: Recorder | None = None) -> Message:
    asyncio.run(run_steps(steps(text), message, runtime or Recorder()))
    return message


def test_transform_keeps_each_value_its_type_and_puts_text_around_values() -> None:
    message = run("""
- transform:
    body: {id: "{{ body.id }}", quantity: "{{ body.quantity }}", lines: "{{ body.lines }}",
           note: "order {{ body.id }} of {{ body.quantity }}"}
    vars: {who: "{{ params.customer }}"}
    headers: {X-Order: "{{ body.id }}"}
    status: "{{ 201 }}"
""", Message(body={"id": "123", "quantity": 2, "lines": [1, 2]}, params={"customer": "ann"}))
    assert message.body == {"id": "123", "quantity": 2, "lines": [1, 2],
                            "note": "order 123 of 2"}
    assert message.vars == {"who": "ann"}
    assert message.headers == {"X-Order": "123"}
    assert message.status == 201


def test_a_template_that_names_what_the_message_lacks_is_a_fault_naming_the_mediator() -> None:
    with pytest.raises(Fault) as fault:
        run("- transform: {body: {item: '{{ body.item }}'}}", Message(body={"other": 1}))
    assert fault.value.mediator == "transform"
    assert "'dict object' has no attribute 'item'" in str(fault.value)


def test_filter_goes_on_drops_or_branches() -> None:
    assert run("- filter: {if: body.quantity > 0}", Message(body={"quantity": 1})).body
    with pytest.raises(Drop):
        run("- filter: {if: body.quantity > 0}", Message(body={"quantity": 0}))
    branch = """
- filter:
    if: body.quantity > 0
    then: [{transform: {vars: {branch: then}}}]
    else: [{transform: {vars: {branch: else}}}]
"""
    assert run(branch, Message(body={"quantity": 1})).vars == {"branch": "then"}
    assert run(branch, Message(body={"quantity": 0})).vars == {"branch": "else"}


def test_switch_runs_the_first_case_that_holds_else_the_default() -> None:
    text = """
- switch:
    cases:
      - when: status == 404
        do: [{respond: {status: 404, body: {error: Item not found}}}]
      - when: status >= 400
        do: [{respond: {status: 400, body: {error: "{{ body.detail }}"}}}]
    default: [{transform: {vars: {ok: true}}}]
"""
    with pytest.raises(Respond) as first:
        run(text, Message(status=404, body={"detail": "x"}))
    assert (first.value.status, first.value.body) == (404, {"error": "Item not found"})
    with pytest.raises(Respond) as second:
        run(text, Message(status=409, body={"detail": "short"}))
    assert (second.value.status, second.value.body) == (400, {"error": "short"})
    assert run(text, Message(status=200)).vars == {"ok": True}


def test_map_shapes_each_item_into_a_list_or_a_mapping() -> None:
    products = [{"id": "p1", "stock": 3}, {"id": "p2", "stock": 0}]
    listed = run("- map: {over: body.items, as: p, to: {item: '{{ p.id }}', n: '{{ p.stock }}'}}",
                 Message(body={"items": products}))
    assert listed.body == [{"item": "p1", "n": 3}, {"item": "p2", "n": 0}]
    keyed = run("- map: {over: body.items, as: p, key: p.id, to: '{{ p.stock }}', "
                "into: vars.stock}", Message(body={"items": products}))
    assert keyed.vars == {"stock": {"p1": 3, "p2": 0}}
    with pytest.raises(Fault, match="'body.items' is not a list"):
        run("- map: {over: body.items, to: 1}", Message(body={"items": "p1"}))


def test_validate_names_the_field_that_fails_its_schema() -> None:
    text = """
- validate:
    schema:
      type: object
      required: [item, quantity]
      properties:
        item: {type: string, minLength: 1}
        quantity: {type: integer, minimum: 1}
"""
    run(text, Message(body={"item": "item1", "quantity": 2}))
    with pytest.raises(Fault) as fault:
        run(text, Message(body={"item": "item1", "quantity": 0}))
    assert str(fault.value) == "quantity: 0 is less than the minimum of 1"
    assert fault.value.mediator == "validate"
    with pytest.raises(Fault, match="body: 'quantity' is a required property"):
        run(text, Message(body={"item": "item1"}))
    with pytest.raises(Fault, match="body: None is not of type 'object'"):
        run(text, Message(body=None))


def test_call_sends_the_message_and_its_answer_becomes_the_message() -> None:
    runtime = Recorder(answers=[(201, {"order_id": "o-1"})])
    message = run("""
- call: {endpoint: shop, path: /orders, body: {lines: "{{ body.lines }}"},
         headers: {Idempotency-Key: "{{ request.headers.key }}"}}
""", Message(body={"lines": [1]}, request={"method": "POST", "headers": {"key": "k-1"}}),
        runtime)
    assert runtime.sent == [("shop", "POST", "/orders", {"lines": [1]}, {"Idempotency-Key": "k-1"})]
    assert (message.status, message.body) == (201, {"order_id": "o-1"})
    runtime = Recorder(answers=[(200, [])])
    run("- call: {endpoint: shop, method: GET, path: '/products?x=1'}", Message(body={"a": 1}),
        runtime)
    assert runtime.sent[0][1:4] == ("GET", "/products?x=1", None)  # a GET carries no body


def test_enrich_keeps_the_answer_beside_the_message_and_a_failed_one_is_a_fault() -> None:
    runtime = Recorder(answers=[(200, {"stock": 3})])
    message = run("- enrich: {endpoint: shop, path: '/products/{{ params.item }}', into: p}",
                  Message(body={"keep": True}, params={"item": "p1"}), runtime)
    assert message.body == {"keep": True} and message.vars == {"p": {"stock": 3}}
    assert runtime.sent[0][1:3] == ("GET", "/products/p1")
    with pytest.raises(Fault, match="enrich from shop: answered 404"):
        run("- enrich: {endpoint: shop, path: /products/x, into: p}", Message(),
            Recorder(answers=[(404, {"detail": "no"})]))


def test_wait_calls_until_the_condition_holds_and_no_longer_than_its_timeout() -> None:
    runtime = Recorder(answers=[(200, {"status": "pending"}), (200, {"status": "pending"}),
                                (200, {"status": "completed"})])
    message = run("- wait: {endpoint: shop, path: /orders/o-1, until: body.status != 'pending',"
                  " every_ms: 1}", Message(), runtime)
    assert len(runtime.sent) == 3 and message.body == {"status": "completed"}
    with pytest.raises(Fault, match=r"did not hold within 0.05s \(last answer 200: "):
        run("- wait: {endpoint: shop, path: /o, until: body.status != 'pending', "
            "timeout_s: 0.05, every_ms: 10}", Message(), Recorder(answers=[(200, {"status":
                                                                                  "pending"})]))


def test_throttle_answers_429_when_the_bucket_is_empty() -> None:
    runtime = Recorder(tokens=[True, False])
    text = "- throttle: {key: request.headers.client, rate_per_s: 5, burst: 2}"
    message = Message(request={"headers": {"client": "till-3"}})
    run(text, message, runtime)
    with pytest.raises(Respond) as over:
        run(text, message, runtime)
    assert over.value.status == 429 and over.value.headers == {"Retry-After": "1"}
    assert runtime.throttled == [("till-3", 5.0, 2)] * 2


def test_store_puts_the_message_under_its_key() -> None:
    runtime = Recorder()
    run("- store: webhooks", Message(body={"status": "completed"},
                                     request={"order_id": "o-9"}), runtime)
    run("- store: {store: audit, key: body.ref}", Message(body={"ref": "r-1"}), runtime)
    assert runtime.stored == [("webhooks", {"status": "completed"}, "o-9"),
                              ("audit", {"ref": "r-1"}, "r-1")]
    with pytest.raises(Fault, match="store: no key for 'audit': .* give the step a `key:`"):
        run("- store: audit", Message(body={"ref": "r-1"}), runtime)


def test_respond_drop_and_a_named_sequence() -> None:
    runtime = Recorder(sequences={"mark": steps("- transform: {vars: {marked: done}}")})
    assert run("- sequence: mark", Message(), runtime).vars == {"marked": "done"}
    with pytest.raises(Respond) as answer:
        run("- respond: {status: 202, headers: {Location: '/o/{{ body.id }}'}}",
            Message(body={"id": "o-1"}))
    assert (answer.value.status, answer.value.body) == (202, {"id": "o-1"})
    assert answer.value.headers == {"Location": "/o/o-1"}
    with pytest.raises(Drop):
        run("- drop\n- log: never", Message())


def test_log_writes_one_line_from_its_template(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.test"):
        run("- log: 'order {{ body.id }} stored'\n- log: {message: careful, level: warning}",
            Message(body={"id": "o-1"}))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "order o-1 stored"), ("WARNING", "careful")]


def test_a_template_cannot_reach_into_python() -> None:
    with pytest.raises(Fault, match="unsafe"):
        run("- transform: {body: '{{ body.__class__.__mro__ }}'}", Message(body={}))
    with pytest.raises(Fault, match="unsafe|immutable"):
        run("- transform: {body: '{{ body.update(x=1) }}'}", Message(body={}))
