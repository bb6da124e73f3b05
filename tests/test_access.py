"""Who may do what: tokens, roles, one customer's reach, and what a browser on
the same machine can and cannot make the API do. The API as served (guard,
hot path, app) on fakeredis."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import fakeredis
import pytest
import redis.asyncio
from fastapi.testclient import TestClient
from pydantic import ValidationError

from access import tokens
from order_api.settings import ApiSettings
from shop import keys
from shop.topology import SHOP
from tests.conftest import api_app, bearer
from tests.shop import Shop

pytestmark = pytest.mark.unit


def run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


@pytest.fixture
def connect(fake_server: fakeredis.FakeServer):  # type: ignore[no-untyped-def]
    return lambda: fakeredis.FakeAsyncRedis(server=fake_server, decode_responses=True)


def token(connect, role: tokens.Role, customer: str | None = None, **kw: object) -> str:  # type: ignore[no-untyped-def]
    async def create() -> str:
        return (await tokens.create(connect(), SHOP, role, customer_id=customer, **kw))[0]  # type: ignore[arg-type]

    return run(create())


@pytest.fixture
def shop(fake: redis.Redis, fake_server: fakeredis.FakeServer) -> Shop:
    driver = Shop(fake, lambda: fakeredis.FakeAsyncRedis(server=fake_server, decode_responses=True))
    driver.product("item1", stock=10, price_cents=2400)
    driver.customer("alice", 100_000)
    driver.customer("bob", 100_000)
    return driver


@pytest.fixture
def who(shop: Shop, connect) -> dict[str, dict[str, str]]:  # type: ignore[no-untyped-def]
    return {
        "operator": bearer(token(connect, "operator")),
        "alice": bearer(token(connect, "customer", "alice")),
        "bob": bearer(token(connect, "customer", "bob")),
        "nobody": {},
    }


@pytest.fixture
def api(afake: redis.asyncio.Redis, shop: Shop) -> Iterator[TestClient]:
    with TestClient(api_app(afake)) as client:
        yield client


ORDER = {"lines": [{"product_id": "item1", "quantity": 1}]}


# -- tokens -------------------------------------------------------------------------


def test_a_token_is_random_stored_hashed_and_names_its_role_and_customer(
    shop: Shop,
    connect,
    fake: redis.Redis,  # type: ignore[no-untyped-def]
) -> None:
    text, info = run(tokens.create(connect(), SHOP, "customer", customer_id="alice", name="a1"))
    assert text.startswith("shop_") and len(text) == 5 + 16 + 1 + 43
    assert (info.name, info.role, info.customer_id, info.expires_at) == (
        "a1",
        "customer",
        "alice",
        None,
    )
    secret = text[len("shop_") + 17 :]  # after the id and its "_"
    everything = str([fake.hgetall(k) if fake.type(k) == "hash" else k for k in fake.keys()])
    assert secret not in everything and tokens.digest(secret) in everything
    assert run(tokens.verify(connect(), SHOP, text)) == tokens.Principal("a1", "customer", "alice")
    # One character off, or nothing like a token: no one.
    assert (
        run(tokens.verify(connect(), SHOP, text[:-1] + ("A" if text[-1] != "A" else "B"))) is None
    )
    assert run(tokens.verify(connect(), SHOP, "letmein")) is None


def test_names_are_unique_customers_must_exist_and_revoking_is_at_once(
    shop: Shop,
    connect,  # type: ignore[no-untyped-def]
) -> None:
    text, _ = run(tokens.create(connect(), SHOP, "operator", name="ops"))
    with pytest.raises(tokens.TokenError, match="a token named 'ops' exists"):
        run(tokens.create(connect(), SHOP, "operator", name="ops"))
    with pytest.raises(tokens.TokenError, match="customer 'zed' does not exist"):
        run(tokens.create(connect(), SHOP, "customer", customer_id="zed"))
    with pytest.raises(tokens.TokenError, match="names its customer"):
        run(tokens.create(connect(), SHOP, "customer"))
    assert [t.name for t in run(tokens.list_tokens(connect(), SHOP))] == ["ops"]
    assert run(tokens.revoke(connect(), SHOP, "ops")) is True
    assert run(tokens.verify(connect(), SHOP, text)) is None
    assert run(tokens.revoke(connect(), SHOP, "ops")) is False
    assert run(tokens.list_tokens(connect(), SHOP)) == []


def test_a_token_expires_with_its_ttl(shop: Shop, connect, fake: redis.Redis) -> None:  # type: ignore[no-untyped-def]
    text, info = run(tokens.create(connect(), SHOP, "operator", name="brief", ttl_s=3600))
    assert info.expires_at is not None
    token_id = text[5:21]
    assert 3590 < fake.ttl(keys.token(token_id)) <= 3600  # Redis forgets it then too
    fake.hset(keys.token(token_id), "expires_ms", str(int(time.time() * 1000) - 1))
    assert run(tokens.verify(connect(), SHOP, text)) is None
    assert [t.name for t in run(tokens.list_tokens(connect(), SHOP))] == [
        "brief"
    ]  # until Redis drops it
    fake.delete(keys.token(token_id))
    assert run(tokens.list_tokens(connect(), SHOP)) == []  # and the name is forgotten


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30d", 30 * 86400), ("12h", 43200), ("90m", 5400), ("45s", 45), ("10", 10)],
)
def test_ttls_read_as_people_write_them(text: str, seconds: int) -> None:
    assert tokens.parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-1d", "3w", "1.5h"])
def test_a_bad_ttl_says_how_to_write_one(text: str) -> None:
    with pytest.raises(tokens.TokenError, match="e.g. 30d"):
        tokens.parse_ttl(text)


# -- who may call what ----------------------------------------------------------------

# (method, path, body): who gets a 2xx; everyone else the status given for them.
ROUTES = [
    ("get", "/products", None, {"nobody", "operator", "alice"}),
    ("get", "/products/item1", None, {"nobody", "operator", "alice"}),
    ("get", "/healthz", None, {"nobody", "operator", "alice"}),
    ("get", "/readyz", None, {"nobody", "operator", "alice"}),
    ("post", "/products", {"id": "tea", "name": "Tea", "price_cents": 5}, {"operator"}),
    ("patch", "/products/item1", {"price_cents": 842081}, {"operator"}),
    ("post", "/products/item1/restock", {"quantity": 5}, {"operator"}),
    ("post", "/products/item1/adjustments", {"delta": -1, "reason": "counted"}, {"operator"}),
    ("delete", "/products/item1", None, {"operator"}),
    (
        "post",
        "/customers",
        {"name": "Rich", "email": "r@x.org", "balance_cents": 10**13},
        {"operator"},
    ),
    ("get", "/customers", None, {"operator"}),
    ("get", "/customers/alice", None, {"operator", "alice"}),
    ("get", "/customers/bob", None, {"operator"}),
    ("post", "/orders", ORDER, {"alice"}),
    ("get", "/orders", None, {"operator", "alice"}),
    ("get", "/orders?customer_id=bob", None, {"operator"}),
    ("get", "/me", None, {"operator", "alice"}),
    ("get", "/ops/streams", None, {"operator"}),
    ("get", "/ops/dead-letters", None, {"operator"}),
    ("get", "/ops/endpoints", None, {"operator"}),
    ("post", "/ops/dead-letters/replay", {"refs": ["orders.created.dead/1-0"]}, {"operator"}),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "allowed"), ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES]
)
@pytest.mark.parametrize("caller", ["nobody", "operator", "alice"])
def test_every_route_checks_who_is_calling(
    api: TestClient,
    who: dict[str, dict[str, str]],
    method: str,
    path: str,
    body: dict | None,
    allowed: set[str],
    caller: str,
) -> None:
    answer = api.request(method, path, json=body, headers=who[caller])
    if caller in allowed:
        assert answer.is_success, answer.text
    elif caller == "nobody":
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"] == "Bearer"
    else:
        assert answer.status_code == 403, answer.text
    assert answer.status_code == 204 or answer.headers["content-type"].startswith(
        "application/json"
    )


def test_every_route_of_the_api_is_in_that_list(api: TestClient) -> None:
    """A new route cannot skip the check above: every path and method the
    OpenAPI document names is there."""
    listed = {(m, re.sub(r"item1|alice|bob|1-0", "{}", p.split("?")[0])) for m, p, _, _ in ROUTES}
    documented = {
        (method, re.sub(r"\{[a-z_]+\}", "{}", path))
        for path, methods in api.get("/openapi.json").json()["paths"].items()
        for method in methods
    }
    assert documented - listed - {("get", "/orders/{}")} == set()


def test_a_wrong_token_is_401_invalid_token_and_the_scheme_is_case_insensitive(
    api: TestClient, who: dict[str, dict[str, str]]
) -> None:
    wrong = api.get("/me", headers={"Authorization": "Bearer shop_" + "0" * 16 + "_" + "A" * 43})
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert wrong.json() == {"detail": "the token is unknown, revoked or expired"}
    text = who["alice"]["Authorization"].split()[1]
    for scheme in ("bearer", "BEARER", "Bearer"):
        assert (
            api.get("/me", headers={"Authorization": f"{scheme} {text}"}).json()["customer_id"]
            == "alice"
        )
    basic = api.get("/me", headers={"Authorization": f"Basic {text}"})
    assert basic.status_code == 401 and "must read 'Bearer <token>'" in basic.text


def test_a_customer_token_acts_as_that_customer_only(
    api: TestClient, who: dict[str, dict[str, str]]
) -> None:
    mine = api.post("/orders", json=ORDER, headers=who["alice"]).json()
    assert mine["customer_id"] == "alice"  # from the token
    theirs = api.post("/orders", json=ORDER, headers=who["bob"]).json()
    refused = api.post("/orders", json={"customer_id": "bob", **ORDER}, headers=who["alice"])
    assert refused.status_code == 403
    assert refused.json() == {"detail": "this token acts for customer 'alice', not 'bob'"}
    assert [o["id"] for o in api.get("/orders", headers=who["alice"]).json()["items"]] == [
        mine["id"]
    ]
    hidden = api.get(f"/orders/{theirs['id']}", headers=who["alice"])
    assert hidden.status_code == 404  # not 403: another's order ids stay private
    assert api.get(f"/orders/{theirs['id']}", headers=who["operator"]).status_code == 200
    assert api.get("/orders", headers=who["operator"]).json()["total"] == 2
    by_operator = api.post("/orders", json={"customer_id": "bob", **ORDER}, headers=who["operator"])
    assert by_operator.status_code == 403 and "customer's own token" in by_operator.text


def test_a_revoked_token_is_refused_on_the_next_request(
    api: TestClient,
    shop: Shop,
    connect,  # type: ignore[no-untyped-def]
) -> None:
    text = token(connect, "operator", name="temp")
    assert api.get("/ops/streams", headers=bearer(text)).status_code == 200
    run(tokens.revoke(connect(), SHOP, "temp"))
    assert api.get("/ops/streams", headers=bearer(text)).status_code == 401


def test_idempotency_keys_are_per_customer(api: TestClient, who: dict[str, dict[str, str]]) -> None:
    key = {"Idempotency-Key": "checkout-1"}
    alices = api.post("/orders", json=ORDER, headers=who["alice"] | key).json()
    bobs = api.post("/orders", json=ORDER, headers=who["bob"] | key)
    assert bobs.status_code == 202 and "idempotent-replayed" not in bobs.headers
    assert bobs.json()["id"] != alices["id"] and bobs.json()["customer_id"] == "bob"


def test_customers_are_listed_in_pages_for_operators(
    api: TestClient, who: dict[str, dict[str, str]]
) -> None:
    for i in range(3):
        api.post(
            "/customers",
            headers=who["operator"],
            json={"id": f"c{i}", "name": f"C{i}", "email": f"c{i}@x.org"},
        )
    page = api.get("/customers", params={"limit": 2}, headers=who["operator"]).json()
    assert [c["id"] for c in page["items"]] == ["alice", "bob"]
    assert (page["total"], page["next_offset"]) == (5, 2)
    rest = api.get("/customers", params={"offset": 4}, headers=who["operator"]).json()
    assert [c["id"] for c in rest["items"]] == ["c2"] and rest["next_offset"] is None


def test_customers_created_before_the_index_are_put_in_it(
    afake: redis.asyncio.Redis, shop: Shop
) -> None:
    from order_api import catalog

    assert run(catalog.index_customers(afake, SHOP)) == 2  # alice and bob were written directly
    assert run(catalog.index_customers(afake, SHOP)) == 0


def test_a_deleted_product_refuses_new_orders_and_refunds_one_placed_before(
    api: TestClient, who: dict[str, dict[str, str]], shop: Shop
) -> None:
    placed = api.post("/orders", json=ORDER, headers=who["alice"]).json()
    shop.settle(["payment"])  # charged, not yet reserved
    assert api.delete("/products/item1", headers=who["operator"]).status_code == 204
    assert api.get("/products/item1").status_code == 404
    refused = api.post("/orders", json=ORDER, headers=who["alice"])
    assert refused.status_code == 404 and "unknown product(s): 'item1'" in refused.text
    shop.settle()
    order = api.get(f"/orders/{placed['id']}", headers=who["alice"]).json()
    assert order["status"] == "refunded"
    assert "unknown product" in order["reason"]
    assert shop.balance("alice") == 100_000


# -- authentication off, on loopback only ------------------------------------------------


def test_without_auth_the_body_names_the_customer_and_a_warning_is_logged(
    afake: redis.asyncio.Redis, shop: Shop, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING), TestClient(api_app(afake, api_auth=False)) as api:
        placed = api.post("/orders", json={"customer_id": "bob", **ORDER})
        assert placed.status_code == 202 and placed.json()["customer_id"] == "bob"
        unnamed = api.post("/orders", json=ORDER)
        assert unnamed.status_code == 422 and "customer_id" in unnamed.json()["detail"]
        assert api.patch("/products/item1", json={"price_cents": 1}).status_code == 200
    assert "authentication is OFF (API_AUTH=false)" in caplog.text


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_auth_cannot_be_turned_off_beyond_loopback(host: str) -> None:
    with pytest.raises(ValidationError, match="only allowed on a loopback address"):
        ApiSettings(api_auth=False, api_host=host)
    ApiSettings(api_auth=True, api_host=host)  # with tokens, any address


# -- browsers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", b'{"lines": [{"product_id": "item1", "quantity": 1}]}'),
        ("application/x-www-form-urlencoded", b"lines=item1"),
        ("multipart/form-data; boundary=x", b"--x--"),
        (None, b'{"lines": []}'),
    ],
)
def test_a_body_that_is_not_json_is_refused_415_before_anything_happens(
    api: TestClient,
    who: dict[str, dict[str, str]],
    shop: Shop,
    content_type: str | None,
    body: bytes,
) -> None:
    headers = who["alice"] | ({"Content-Type": content_type} if content_type else {})
    for path in ("/orders", "/products"):
        answer = api.post(path, content=body, headers=headers)
        assert answer.status_code == 415, answer.text
        assert answer.json()["detail"].startswith("the body must be application/json")
    assert shop.r.zcard(keys.orders_index()) == 0


def test_a_host_the_api_does_not_answer_for_is_refused(
    api: TestClient, who: dict[str, dict[str, str]]
) -> None:
    answer = api.post("/orders", json=ORDER, headers=who["alice"] | {"Host": "evil.example"})
    assert answer.status_code == 400
    assert answer.json() == {
        "detail": "Host header 'evil.example' is not a host this API "
        "answers for (API_TRUSTED_HOSTS)"
    }
    assert api.get("/healthz", headers={"Host": "testserver:8000"}).status_code == 200


def test_cors_is_closed_unless_an_allow_list_is_set(afake: redis.asyncio.Redis, shop: Shop) -> None:
    preflight = {
        "Origin": "https://shop.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    with TestClient(api_app(afake)) as closed:
        answer = closed.options("/orders", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
        assert (
            "access-control-allow-origin"
            not in closed.get("/products", headers={"Origin": "https://shop.example"}).headers
        )
    with TestClient(api_app(afake, api_cors_origins="https://shop.example")) as opened:
        answer = opened.options("/products", headers=preflight)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "https://shop.example"
        other = opened.options("/products", headers=preflight | {"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


# -- limits -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/orders", "/products"])
def test_a_body_over_the_limit_is_413_whether_declared_or_streamed(
    api: TestClient, who: dict[str, dict[str, str]], shop: Shop, path: str
) -> None:
    headers = who["alice"] | {"Content-Type": "application/json"}
    declared = api.post(path, content=b" " * 70_000, headers=headers)
    assert declared.status_code == 413 and declared.headers["connection"] == "close"
    assert declared.json()["detail"] == (
        "the body is over 65536 bytes (API_MAX_BODY_BYTES); it was not read"
    )

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        for _ in range(100):
            yield b" " * 1024

    streamed = api.post(path, content=chunks(), headers=headers)
    assert streamed.status_code == 413, streamed.text
    assert "API_MAX_BODY_BYTES" in streamed.json()["detail"]
    assert shop.r.zcard(keys.orders_index()) == 0


@pytest.mark.unit
def test_a_secret_file_is_written_whole_and_private(tmp_path: Path) -> None:
    from access.demo import write_secret

    path = tmp_path / "operator"
    write_secret(path, "shop_one")
    write_secret(path, "shop_two")  # replaced whole
    assert path.read_text() == "shop_two\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["operator"]  # no partial file left
