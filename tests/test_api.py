"""The HTTP API on fakeredis: every route, every error answer."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict

import fakeredis
import pytest
import redis.asyncio
from fastapi.testclient import TestClient

from gateway.endpoints import State, shown
from order_api.orders import new_order_id
from shop import keys
from shop.topology import SHOP
from shopctl.redis_server import free_port
from streams.connection import connect_async
from tests.conftest import api_app, bearer, make_token

pytestmark = pytest.mark.unit


@pytest.fixture
def tokens(fake_server: fakeredis.FakeServer) -> dict[str, dict[str, str]]:
    """Authorization headers: an operator's, and alice's and bob's (made once
    the API has created them)."""
    return {"operator": bearer(make_token(
        lambda: fakeredis.FakeAsyncRedis(server=fake_server, decode_responses=True), "operator"))}


@pytest.fixture
def api(afake: redis.asyncio.Redis, fake_server: fakeredis.FakeServer,
        tokens: dict[str, dict[str, str]]) -> Iterator[TestClient]:
    """The API as served, as an operator by default; ``ALICE`` and ``BOB`` act
    as those customers."""
    with TestClient(api_app(afake), headers=tokens["operator"]) as client:
        client.post("/products", json={"id": "item1", "name": "Beans", "price_cents": 2400,
                                       "stock": 100})
        client.post("/products", json={"id": "item2", "name": "Cup", "price_cents": 1200,
                                       "stock": 50})
        client.post("/customers", json={"id": "alice", "name": "Alice",
                                        "email": "alice@example.com", "balance_cents": 100_000})
        client.post("/customers", json={"id": "bob", "name": "Bob", "email": "b@example.com"})
        for who in ("alice", "bob"):
            tokens[who] = bearer(make_token(
                lambda: fakeredis.FakeAsyncRedis(server=fake_server, decode_responses=True),
                "customer", who))
        yield client


@pytest.fixture
def alice(tokens: dict[str, dict[str, str]], api: TestClient) -> dict[str, str]:
    return tokens["alice"]


def test_a_product_is_added_read_listed_changed_and_restocked(api: TestClient) -> None:
    created = api.post("/products", json={"name": "Grinder", "price_cents": 9900})
    assert created.status_code == 201
    product = created.json()
    assert product["stock"] == 0 and len(product["id"]) > 10  # generated id
    assert api.get(f"/products/{product['id']}").json() == product
    assert [p["id"] for p in api.get("/products").json()] == sorted(
        ["item1", "item2", product["id"]]
    )
    changed = api.patch("/products/item1", json={"price_cents": 2500})
    assert changed.json() == {"id": "item1", "name": "Beans", "price_cents": 2500, "stock": 100}
    assert api.post("/products/item1/restock", json={"quantity": 5}).json()["stock"] == 105


def test_a_customer_is_added_and_read_with_the_balance(api: TestClient) -> None:
    answer = api.post("/customers", json={"name": "Dan", "email": "dan@example.com",
                                          "balance_cents": 700})
    assert answer.status_code == 201
    customer = answer.json()
    assert api.get(f"/customers/{customer['id']}").json() == customer
    assert api.get("/customers/alice").json()["balance_cents"] == 100_000


def test_an_order_is_accepted_pending_with_prices_total_and_location(
    api: TestClient, alice: dict[str, str]
) -> None:
    answer = api.post("/orders", headers=alice, json={"lines": [
        {"product_id": "item1", "quantity": 2}, {"product_id": "item2", "quantity": 3}]})
    assert answer.status_code == 202
    order = answer.json()
    assert answer.headers["location"] == f"/orders/{order['id']}"
    assert order["status"] == "pending" and order["reason"] == ""
    assert order["total_cents"] == 2 * 2400 + 3 * 1200
    assert order["lines"][0] == {"product_id": "item1", "quantity": 2, "price_cents": 2400}
    [created] = order["history"]
    assert created["type"] == "order.created" and created["stream"] == "orders.created"
    assert order["customer_id"] == "alice"  # the token's customer
    assert api.get(answer.headers["location"]).json() == order  # the answer is what is stored


def test_orders_are_listed_newest_first_filtered_and_paginated(
    api: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    ids = []
    for customer in ("alice", "bob", "alice", "alice"):
        answer = api.post("/orders", headers=tokens[customer], json={
            "customer_id": customer, "lines": [{"product_id": "item1", "quantity": 1}]})
        ids.append(answer.json()["id"])
    page = api.get("/orders", params={"customer_id": "alice", "limit": 2}).json()
    assert page["total"] == 3 and page["next_offset"] == 2
    assert [o["id"] for o in page["items"]] == [ids[3], ids[2]]
    rest = api.get("/orders", params={"customer_id": "alice", "limit": 2, "offset": 2}).json()
    assert [o["id"] for o in rest["items"]] == [ids[0]] and rest["next_offset"] is None
    both = api.get("/orders", params={"customer_id": "bob", "status": "pending"}).json()
    assert [o["id"] for o in both["items"]] == [ids[1]]
    assert api.get("/orders", params={"status": "completed"}).json()["total"] == 0
    assert api.get("/orders").json()["total"] == 4


def test_pages_across_four_partitions_are_merged_newest_first_and_stable(
    afake: redis.asyncio.Redis, fake_server: fakeredis.FakeServer
) -> None:
    """Orders of eight customers, in four partitions: each page is the next
    slice of one order, newest first (ties by id, as Redis keeps each index),
    the same at every read, with the total of every partition."""
    connect = lambda: fakeredis.FakeAsyncRedis(server=fake_server, decode_responses=True)  # noqa: E731
    operator = bearer(make_token(connect, "operator", partitions=4))
    customers = [f"c{i}" for i in range(8)]
    with TestClient(api_app(afake, partitions=4), headers=operator) as api:
        api.post("/products", json={"id": "item1", "name": "Beans", "price_cents": 100,
                                    "stock": 100})
        for c in customers:
            assert api.post("/customers", json={"id": c, "name": c, "email": f"{c}@x.org",
                                                "balance_cents": 10_000}).status_code == 201
        tokens = {c: bearer(make_token(connect, "customer", c, partitions=4)) for c in customers}
        placed = [
            api.post("/orders", headers=tokens[customers[i % 8]],
                     json={"lines": [{"product_id": "item1", "quantity": 1}]}).json()["id"]
            for i in range(30)
        ]

        def all_pages(**params: object) -> tuple[list[str], set[int]]:
            ids, totals, offset = [], set(), 0
            while offset is not None:
                page = api.get("/orders", params={**params, "limit": 7, "offset": offset}).json()
                ids += [o["id"] for o in page["items"]]
                totals.add(page["total"])
                offset = page["next_offset"]
            return ids, totals

        sync = fakeredis.FakeRedis(server=fake_server, decode_responses=True)
        tags = SHOP.with_partitions(4).tags()
        scored = [(score, o) for tag in tags
                  for o, score in sync.zrange(keys.orders_index(tag), 0, -1, withscores=True)]
        assert sum(1 for tag in tags if sync.zcard(keys.orders_index(tag))) > 1, "one partition"
        newest_first = [o for _, o in sorted(scored, reverse=True)]
        assert sorted(newest_first) == sorted(placed)
        assert all_pages() == (newest_first, {30})
        assert all_pages() == (newest_first, {30})  # the same pages at every read
        assert all_pages(status="pending") == (newest_first, {30})
        c0s = [o for o in newest_first if o in placed[0::8]]
        assert all_pages(customer_id="c0") == (c0s, {len(c0s)})


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "detail"),
    [
        ("get", "/products/nope", None, 404, "product 'nope' not found"),
        ("get", "/customers/nope", None, 404, "customer 'nope' not found"),
        ("get", "/orders/nope", None, 404, "order 'nope' not found"),
        ("patch", "/products/nope", {"name": "x"}, 404, "product 'nope' not found"),
        ("post", "/products/nope/restock", {"quantity": 1}, 404, "product 'nope' not found"),
        ("post", "/products", {"id": "item1", "name": "x", "price_cents": 1}, 409,
         "product 'item1' already exists"),
        ("post", "/customers", {"id": "alice", "name": "A", "email": "a@b.c"}, 409,
         "customer 'alice' already exists"),
        ("post", "/orders", {"customer_id": "zed", "lines": [
            {"product_id": "item1", "quantity": 1}]}, 403,
         "this token acts for customer 'alice', not 'zed'"),
        ("post", "/orders", {"customer_id": "alice", "lines": [
            {"product_id": "item9", "quantity": 1}]}, 404, "unknown product(s): 'item9'"),
        ("post", "/orders", {"customer_id": "alice", "lines": []}, 422,
         "lines: List should have at least 1 item"),
        ("post", "/orders", {"customer_id": "alice", "lines": [
            {"product_id": "item1", "quantity": 0}]}, 422,
         "lines.0.quantity: Input should be greater than or equal to 1"),
        ("post", "/orders", {"customer_id": "alice", "lines": [
            {"product_id": "item1", "quantity": 10_001}]}, 422,
         "lines.0.quantity: Input should be less than or equal to 10000"),
        ("post", "/orders", {"customer_id": "alice", "lines": [
            {"product_id": "item1", "quantity": "2"}]}, 422,
         "lines.0.quantity: Input should be a valid integer"),
        ("post", "/orders", {"customer_id": "alice", "lines": [
            {"product_id": "item1", "quantity": 1}] * 51}, 422,
         "lines: List should have at most 50 items"),
        ("post", "/orders", {"customer_id": "a:b", "lines": [
            {"product_id": "item1", "quantity": 1}]}, 422, "customer_id: String should match"),
        ("get", "/orders/ord_1:history", None, 422, "path.order_id: String should match"),
        ("get", "/products/a%20b", None, 422, "path.product_id: String should match"),
        ("get", "/orders?offset=9223372036854775807", None, 422,
         "query.offset: Input should be less than or equal to 1000000"),
        ("post", "/products", "{bad", 422, "JSON decode error"),
        ("post", "/customers", "[1", 422, "JSON decode error"),
        ("delete", "/products/nope", None, 404, "product 'nope' not found"),
        ("post", "/products", {"name": "x", "price_cents": 12.5}, 422,
         "price_cents: Input should be a valid integer"),
        ("post", "/products", {"id": "a:b", "name": "x", "price_cents": 1}, 422,
         "id: String should match pattern"),
        ("patch", "/products/item1", {}, 422, "give name or price_cents"),
        ("post", "/products/item1/restock", {"quantity": -3}, 422,
         "quantity: Input should be greater than or equal to 1"),
        ("get", "/orders?status=lost", None, 422, "query.status: Input should be"),
        ("post", "/ops/dead-letters/replay", {"refs": [
            "orders.created.dead/99999999999999999999-0"]}, 422, "refs.0: String should match"),
        ("get", "/orders?custmer_id=bob", None, 422,
         "query.custmer_id: Extra inputs are not permitted"),
    ],
)
def test_bad_requests_get_a_clear_4xx_naming_the_problem(
    api: TestClient, alice: dict[str, str], method: str, path: str, body: dict | str | None,
    status: int, detail: str
) -> None:
    headers = alice if (method, path) == ("post", "/orders") else None
    if isinstance(body, str):  # not JSON at all
        answer = api.request(method, path, content=body,
                             headers={"Content-Type": "application/json", **(headers or {})})
    else:
        answer = api.request(method, path, json=body, headers=headers)
    assert answer.status_code == status
    assert detail in answer.json()["detail"]


def test_a_body_that_is_not_json_is_a_422(api: TestClient, alice: dict[str, str]) -> None:
    answer = api.post("/orders", content=b"{nope",
                      headers={"content-type": "application/json", **alice})
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("body: Invalid JSON: key must be a string")


def test_health_and_readiness(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ok"}


def test_redis_unreachable_is_a_503_with_retry_after_not_a_stack_trace() -> None:
    nowhere = connect_async(f"redis://127.0.0.1:{free_port()}/0")
    someone = bearer("shop_" + "0" * 16 + "_" + "x" * 43)  # checking it needs Redis
    with TestClient(api_app(nowhere), headers=someone) as api:
        assert api.get("/healthz").status_code == 200
        for method, path, body in [
            ("get", "/readyz", None),
            ("get", "/products", None),
            ("post", "/orders", {"customer_id": "a", "lines": [
                {"product_id": "item1", "quantity": 1}]}),
        ]:
            answer = api.request(method, path, json=body)
            assert answer.status_code == 503
            assert answer.headers["retry-after"] == "1"
            assert answer.json() == {
                "detail": "the data store is unreachable and nothing was done; try again shortly"}


ORDER = {"customer_id": "alice", "lines": [{"product_id": "item1", "quantity": 2}]}


def test_an_idempotency_key_gets_the_same_order_not_a_second_one(
    api: TestClient, afake: redis.asyncio.Redis, alice: dict[str, str]
) -> None:
    first = api.post("/orders", json=ORDER, headers={"Idempotency-Key": "checkout-42", **alice})
    again = api.post("/orders", json=ORDER, headers={"Idempotency-Key": "checkout-42", **alice})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert api.get("/orders").json()["total"] == 1
    other = api.post("/orders", json=ORDER, headers={"Idempotency-Key": "checkout-43", **alice})
    assert other.json()["id"] != first.json()["id"]
    assert api.get("/orders").json()["total"] == 2
    # The key expires after a day.
    ttl = asyncio.run(afake.ttl("shop:idempotency:alice:checkout-42"))
    assert 24 * 3600 - 5 < ttl <= 24 * 3600


def test_reusing_an_idempotency_key_for_another_body_is_a_422(
    api: TestClient, alice: dict[str, str]
) -> None:
    api.post("/orders", json=ORDER, headers={"Idempotency-Key": "k1", **alice})
    changed = ORDER | {"lines": [{"product_id": "item1", "quantity": 3}]}
    answer = api.post("/orders", json=changed, headers={"Idempotency-Key": "k1", **alice})
    assert answer.status_code == 422
    assert answer.json()["detail"] == (
        "Idempotency-Key 'k1' was already used for a different order body; "
        "send a new key for a new order"
    )
    assert api.get("/orders").json()["total"] == 1


@pytest.mark.parametrize("key", ["has space", "x" * 201, ""])
def test_a_malformed_idempotency_key_is_a_422(
    api: TestClient, alice: dict[str, str], key: str
) -> None:
    answer = api.post("/orders", json=ORDER, headers={"Idempotency-Key": key, **alice})
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("header.Idempotency-Key: String should")


def test_products_are_searched_by_words_of_their_id_or_name(api: TestClient) -> None:
    assert [p["id"] for p in api.get("/products", params={"q": "cup"}).json()] == ["item2"]
    assert [p["id"] for p in api.get("/products", params={"q": "BEANS item1"}).json()] == [
        "item1"]
    assert api.get("/products", params={"q": "tea"}).json() == []
    assert len(api.get("/products").json()) == 2


def test_operators_see_streams_groups_and_dead_letters(
    api: TestClient, afake: redis.asyncio.Redis, alice: dict[str, str]
) -> None:
    api.post("/orders", json=ORDER, headers=alice)
    asyncio.run(afake.xadd("orders.created", {"hello": "world"}))
    asyncio.run(afake.xgroup_create("orders.created", "payment", id="0"))
    streams = {s["name"]: s for s in api.get("/ops/streams").json()}
    assert list(streams) == ["orders.created", "payments.completed", "payments.failed",
                             "inventory.reserved", "inventory.rejected", "payments.refunded"]
    assert streams["orders.created"]["length"] == 2
    assert streams["orders.created"]["entries_added"] == 2
    [group] = streams["orders.created"]["groups"]
    assert (group["name"], group["pending"], group["lag"]) == ("payment", 0, 2)
    assert streams["payments.completed"] == {
        "name": "payments.completed", "length": 0, "entries_added": 0, "last_id": "0-0",
        "groups": [], "dead_letters": 0}
    assert api.get("/ops/dead-letters").json() == []
    answer = api.post("/ops/dead-letters/replay", json={"refs": ["nowhere/1-0"]})
    assert answer.status_code == 422 and answer.json()["detail"].startswith(
        "refs.0: String should match pattern")
    answer = api.post("/ops/dead-letters/replay", json={"refs": ["orders.created.dead/1-0"]})
    assert answer.json() == {"results": {"orders.created.dead/1-0": "no such dead letter"}}
    assert api.get("/ops/dead-letters", params={"stream": "nope"}).status_code == 422
    # A gateway's store is a stream like the others; one no gateway registered
    # holds nothing.
    assert api.get("/ops/dead-letters", params={"stream": "gateway.hooks"}).json() == []
    answer = api.post("/ops/dead-letters/replay", json={"refs": ["gateway.hooks.dead/1-0"]})
    assert answer.json() == {"results": {"gateway.hooks.dead/1-0": "no such dead letter"}}
    assert "gateway.hooks" not in [s["name"] for s in api.get("/ops/streams").json()]
    asyncio.run(afake.sadd(keys.gateway_stores(), "gateway.hooks"))
    assert "gateway.hooks" in [s["name"] for s in api.get("/ops/streams").json()]


def test_operators_see_the_gateways_endpoints(api: TestClient,
                                              afake: redis.asyncio.Redis) -> None:
    assert api.get("/ops/endpoints").json() == []
    down = State("receiver", shown("http://user:pw@hooks.example:8443/in?key=secret"),
                 state="suspended", suspended_until="2026-12-02T06:00:00Z", failures=3,
                 last_error="answered 503", sent=7, answered=4)
    asyncio.run(afake.hset(keys.gateway_endpoints(), mapping={
        "webhooks/receiver": json.dumps(asdict(down)), "webhooks/broken": "{not json"}))
    assert api.get("/ops/endpoints").json() == [{
        "gateway": "webhooks", "endpoint": "receiver", "url": "http://hooks.example:8443/in",
        "state": "suspended", "suspended_until": "2026-12-02T06:00:00Z", "failures": 3,
        "last_error": "answered 503", "last_ok_at": None, "sent": 7, "answered": 4}]


def test_every_error_answer_is_described_in_openapi_with_its_schema(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"Problem", "ValidationProblem", "UnknownOutcome"} <= set(schemas)
    operations = {f"{method.upper()} {path}": op for path, ops in spec["paths"].items()
                  for method, op in ops.items()}
    for name, op in operations.items():
        codes = set(op["responses"])
        assert {"400", "422"} <= codes, name  # a wrong Host, an unknown parameter: any route
        assert ("503" in codes) == (name != "GET /healthz"), name  # Redis away
        for code in codes - {"200", "201", "202", "204"}:
            schema = op["responses"][code]["content"]["application/json"]["schema"]
            assert schema["$ref"].rsplit("/", 1)[1] in schemas, (name, code)
    assert {"401", "403", "404", "413", "415", "422", "504"} <= set(
        operations["POST /orders"]["responses"])
    assert operations["POST /orders"]["responses"]["504"]["content"]["application/json"][
        "schema"] == {"$ref": "#/components/schemas/UnknownOutcome"}
    assert {"401", "403", "409"} <= set(operations["POST /products"]["responses"])
    assert "401" not in operations["GET /products"]["responses"]  # the catalog is open
    links = operations["POST /products"]["responses"]["201"]["links"]
    assert {link["parameters"]["product_id"] for link in links.values()} == {
        "$response.body#/id"}


def test_a_method_a_path_does_not_take_is_405_naming_those_it_does(api: TestClient) -> None:
    answer = api.request("PUT", "/products/item1")
    assert answer.status_code == 405 and answer.headers["allow"] == "DELETE, GET, PATCH"
    assert answer.json() == {"detail": "PUT is not allowed here; allowed: DELETE, GET, PATCH"}


def test_the_order_body_and_key_are_described_in_openapi(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()
    post = spec["paths"]["/orders"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/OrderIn"}
    assert set(spec["components"]["schemas"]["OrderIn"]["properties"]) == {"customer_id", "lines"}
    assert "LineIn" in spec["components"]["schemas"]
    assert [p["name"] for p in post["parameters"]] == ["Idempotency-Key"]
    assert post["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/OrderOut"}


def test_the_hot_path_answers_as_the_app_does(api: TestClient, alice: dict[str, str]) -> None:
    """In production POST /orders is served by HotPath, in front of the app (as
    here): the same answers, the same errors."""
    placed = api.post("/orders", json=ORDER, headers={"Idempotency-Key": "hot-1", **alice})
    assert placed.status_code == 202 and placed.json()["total_cents"] == 4800
    assert placed.headers["location"] == f"/orders/{placed.json()['id']}"
    again = api.post("/orders", json=ORDER, headers={"Idempotency-Key": "hot-1", **alice})
    assert again.json()["id"] == placed.json()["id"]
    bad = api.post("/orders", json={"lines": []}, headers=alice)
    assert bad.status_code == 422 and bad.json()["detail"].startswith("lines: List should")
    unknown = api.post("/orders", json={"lines": [{"product_id": "tea", "quantity": 1}]},
                       headers=alice)
    assert unknown.status_code == 404 and "unknown product(s): 'tea'" in unknown.text
    assert api.get("/orders").json()["total"] == 1  # everything else: the app


def test_order_ids_are_unguessable_and_a_forked_process_never_repeats_its_parents() -> None:
    ids = [new_order_id() for _ in range(2000)]  # several 4 KiB blocks of secure bits
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"ord_[0-9a-f]{16}", i) for i in ids)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its next ids, to the parent
        os.write(write, " ".join(new_order_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    _, status = os.waitpid(child, 0)
    with os.fdopen(read) as pipe:
        from_child = pipe.read().split()
    assert status == 0 and len(from_child) == 10
    assert not set(from_child) & {new_order_id() for _ in range(10)}


def test_an_operator_adjusts_stock_never_below_zero_and_each_change_is_recorded(
    api: TestClient, fake: redis.Redis
) -> None:
    api.post("/products", json={"id": "item9", "name": "Nine", "price_cents": 5, "stock": 100})
    taken = api.post("/products/item9/adjustments", json={"delta": -10, "reason": "counted"})
    assert taken.status_code == 200 and taken.json()["stock"] == 90
    refused = api.post("/products/item9/adjustments", json={"delta": -91, "reason": "oops"})
    assert refused.status_code == 409
    assert refused.json()["detail"] == ("product 'item9' has 90 in stock: a change of -91 would "
                                        "take it below zero")
    assert api.post("/products/item9/restock", json={"quantity": 5}).json()["stock"] == 95
    assert api.post("/products/nope/adjustments",
                    json={"delta": 1, "reason": "x"}).status_code == 404
    assert api.post("/products/item9/adjustments", json={"delta": 1}).status_code == 422
    recorded = [f for _, f in fake.xrange(keys.adjustments("item9"))]
    assert [(f["delta"], f["stock"], f["reason"]) for f in recorded] == [
        ("-10", "90", "counted"), ("5", "95", "restock")]
    assert all(f["type"] == "inventory.adjusted" and f["by"] for f in recorded)
