"""Traces, metrics and the dashboard's data, in-process against the real
server: one order's saga is one trace, its hops linked as the events were
published; the counters count what happened; ``/metrics`` and the
dashboard's snapshot say what Redis holds."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from dashboard.snapshot import Board
from order_api import ops
from shop import topology as shop_topology
from shopctl.redis_server import RedisServer
from streams import metrics, tracing
from streams.delivery import Delivery
from streams.outcomes import Ack, Apply, Reject
from streams.scripts import Step
from tests.conftest import PARTITIONS, api_app, bearer, make_token, real_shop_of
from tests.shop import WORKERS, Shop

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Spans on, kept in memory; off again after the test."""
    exporter = InMemorySpanExporter()
    tracing.configure("test", exporter, batch=False)
    yield exporter
    tracing.shutdown()


@pytest.fixture(params=PARTITIONS)
def shop(real: redis.Redis, redis_server: RedisServer, request: pytest.FixtureRequest
         ) -> Iterator[Shop]:
    driver = real_shop_of(real, redis_server, request.param)
    driver.product("item1", 10, 2400)
    driver.product("item2", 0, 1200)  # nothing in stock: paid, then refunded
    driver.customer("alice", 100_000)
    driver.customer("bob", 100)  # too little for anything: declined
    yield driver
    driver.close()


def token(shop: Shop, customer: str | None = None) -> dict[str, str]:
    role = "customer" if customer else "operator"
    return bearer(make_token(shop.async_client, role, customer, shop.topology.partitions))


def api(shop: Shop) -> TestClient:
    return TestClient(api_app(shop.async_client(), partitions=shop.topology.partitions))


def events_of(shop: Shop, order_id: str) -> dict[str, dict[str, str]]:
    """The order's events by type (each once in this test)."""
    return {f["type"]: f for stream in shop.topology.streams
            for _, _, f in shop.entries(stream) if f.get("order_id") == order_id}


@pytest.mark.integration
def test_one_orders_saga_is_one_trace_going_on_from_the_callers(
    shop: Shop, spans: InMemorySpanExporter,
) -> None:
    trace_id, caller_span = "ab" * 16, "cd" * 8
    with api(shop) as client:
        answer = client.post("/orders", headers=token(shop, "alice") | {
            "traceparent": f"00-{trace_id}-{caller_span}-01"},
            json={"lines": [{"product_id": "item2", "quantity": 1}]})
    assert answer.status_code == 202, answer.text
    order_id = answer.json()["id"]
    assert answer.headers["traceresponse"].startswith(f"00-{trace_id}-")
    shop.settle()

    published = {kind: tracing.parse(f["traceparent"])
                 for kind, f in events_of(shop, order_id).items()}
    assert set(published) == {"order.created", "payment.completed", "inventory.rejected",
                              "payment.refunded"}
    assert {hop.trace_id for hop in published.values() if hop} == {trace_id}
    finished = {s.name: s for s in spans.get_finished_spans()
                if f"{s.context.trace_id:032x}" == trace_id}

    def span_id(name: str) -> str:
        return f"{finished[name].context.span_id:016x}"

    def parent_of(name: str) -> str:
        parent = finished[name].parent
        assert parent is not None, name
        return f"{parent.span_id:016x}"

    assert parent_of("POST /orders") == caller_span
    assert finished["POST /orders"].attributes["order.id"] == order_id
    # Each event names the hop that published it; each hop that handled it is its child.
    chain = [("order.created", "POST /orders", "payment order.created"),
             ("payment.completed", "payment order.created", "inventory payment.completed"),
             ("inventory.rejected", "inventory payment.completed",
              "payment inventory.rejected")]
    for event, writer, reader in chain:
        assert published[event].span_id == span_id(writer), event
        assert parent_of(reader) == span_id(writer), reader
        assert parent_of(f"order-status {event}") == span_id(writer)
    assert published["payment.refunded"].span_id == span_id("payment inventory.rejected")
    handled = [s for name, s in finished.items() if name != "POST /orders"]
    assert len(handled) == 3 + 4  # payment twice, inventory once, the projector 4 times
    assert all(s.attributes["order.id"] == order_id for s in handled)
    assert all(s.attributes["messaging.consumer.group.name"] for s in handled)


@pytest.mark.integration
def test_without_an_exporter_no_span_is_recorded_but_every_event_carries_its_trace(
    shop: Shop,
) -> None:
    assert not tracing.enabled()
    first = shop.order("alice", ("item1", 1))
    second = shop.order("alice", ("item1", 1))
    shop.settle()
    for order_id in (first, second):
        hops = [tracing.parse(f["traceparent"]) for f in events_of(shop, order_id).values()]
        assert len(hops) == 3 and all(hops)
        assert len({hop.trace_id for hop in hops if hop}) == 1  # one trace per order
        assert len({hop.span_id for hop in hops if hop}) == 3  # a hop per event
    trace = {o: tracing.parse(events_of(shop, o)["order.created"]["traceparent"])
             for o in (first, second)}
    assert trace[first] != trace[second]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scraped(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics")  # no token: what Prometheus does
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def total(found: dict, name: str, **labels: str) -> float:
    """A metric summed over its partitions (and any label not given)."""
    return sum(value for (n, got), value in found.items()
               if n == name and all(dict(got).get(k) == v for k, v in labels.items()))


@pytest.mark.integration
def test_the_api_counts_its_orders_and_serves_the_flow_as_redis_holds_it(shop: Shop) -> None:
    before = {name: sample(name) for name in ("shop_orders_accepted_total",
                                              "shop_orders_replayed_total")}
    refused = {reason: sample("shop_orders_refused_total", reason=reason)
               for reason in ("unknown_product_or_customer", "unauthenticated", "invalid")}
    alice = token(shop, "alice")
    body = {"lines": [{"product_id": "item1", "quantity": 1}]}
    for consumer in shop.consumers.values():  # the workers are up, and have read nothing
        consumer.ensure_groups()
    with api(shop) as client:
        for i in range(3):
            assert client.post("/orders", headers=alice | {"Idempotency-Key": f"k{i}"},
                               json=body).status_code == 202
        assert client.post("/orders", headers=alice | {"Idempotency-Key": "k0"},
                           json=body).status_code == 202  # the same order again
        assert client.post("/orders", headers=alice, json={"lines": [
            {"product_id": "nope", "quantity": 1}]}).status_code == 404
        assert client.post("/orders", json=body).status_code == 401
        assert client.post("/orders", headers=alice, json={"lines": []}).status_code == 422
        assert sample("shop_orders_accepted_total") == before["shop_orders_accepted_total"] + 3
        assert sample("shop_orders_replayed_total") == before["shop_orders_replayed_total"] + 1
        for reason, was in refused.items():
            assert sample("shop_orders_refused_total", reason=reason) == was + 1, reason

        waiting = scraped(client)
        assert total(waiting, "streams_consumer_lag_messages", stream="orders.created",
                     group="payment") == 3
        assert total(waiting, "streams_entries_added_total", stream="orders.created") == 3
        partitions = {dict(labels)["partition"] for (name, labels) in waiting
                      if name == "streams_length_messages"}
        assert partitions == ({"-"} if shop.topology.partitions == 1 else
                              {f"p{i}" for i in range(shop.topology.partitions)})

        junk = shop.topology.stream(shop_topology.ORDERS_CREATED, shop.topology.tag(0))
        shop.r.xadd(junk, {"hello": "world"})
        shop.settle()
        settled = scraped(client)
    for group in ("payment", "order-status"):
        assert total(settled, "streams_consumer_lag_messages", stream="orders.created",
                     group=group) == 0
        assert total(settled, "streams_pending_messages", stream="orders.created",
                     group=group) == 0
    assert total(settled, "streams_dead_letters_messages", stream="orders.created") == 2
    assert total(settled, "streams_length_messages", stream="payments.completed") == 3


@pytest.mark.integration
def test_workers_count_each_message_by_outcome_and_the_projector_times_each_order(
    shop: Shop,
) -> None:
    measured = {group: shop.consumer(group, name=f"measured-{group}", retry_after_s=0.01,
                                     middleware=(metrics.count, *worker.metrics))
                for group, worker in WORKERS.items()}

    def settle() -> None:
        for _ in range(5):
            for consumer in measured.values():
                consumer.run(once=True)

    def handled(group: str, kind: str, outcome: str) -> float:
        return sample("streams_events_handled_total", group=group, type=kind, outcome=outcome)

    def settled(status: str) -> float:
        return sample("shop_order_settle_seconds_count", status=status)

    counted = {k: handled(*k) for k in [
        ("payment", "order.created", "applied"), ("inventory", "payment.completed", "applied"),
        ("inventory", "payment.completed", "duplicate"), ("payment", "malformed",
                                                          "dead_lettered"),
        ("order-status", "order.created", "acked")]}
    times = {s: settled(s) for s in ("completed", "rejected", "refunded")}
    timed = sample("streams_handler_duration_seconds_count", group="payment")

    placed = [shop.order("alice", ("item1", 1)), shop.order("bob", ("item1", 1)),
              shop.order("alice", ("item2", 1))]
    settle()
    assert [shop.status(o) for o in placed] == ["completed", "rejected", "refunded"]
    # The payment event of the first order, delivered again: nothing changes, and it says so.
    again = events_of(shop, placed[0])["payment.completed"]
    shop.add(shop_topology.PAYMENTS_COMPLETED, again)
    shop.r.xadd(shop.topology.stream(shop_topology.ORDERS_CREATED, shop.topology.tag(0)),
                {"hello": "world"})
    settle()

    assert handled("payment", "order.created", "applied") == counted[
        ("payment", "order.created", "applied")] + 3
    assert handled("inventory", "payment.completed", "applied") == counted[
        ("inventory", "payment.completed", "applied")] + 2
    assert handled("inventory", "payment.completed", "duplicate") == counted[
        ("inventory", "payment.completed", "duplicate")] + 1
    assert handled("payment", "malformed", "dead_lettered") == counted[
        ("payment", "malformed", "dead_lettered")] + 1
    assert handled("order-status", "order.created", "acked") == counted[
        ("order-status", "order.created", "acked")] + 3
    assert all(settled(s) == was + 1 for s, was in times.items())
    assert sample("streams_handler_duration_seconds_count", group="payment") >= timed + 4


@pytest.mark.unit
def test_an_outcome_is_named_by_what_became_of_the_message() -> None:
    def delivery(**what: object) -> Delivery:
        d = Delivery("s", "1-0", {}, "g")
        for name, value in what.items():
            setattr(d, name, value)
        return d

    step = Step("x", "return {'done'}", publishes=False)
    assert metrics.outcome_of(delivery(outcome=Apply(step, [], []), result=["done"])) == "applied"
    assert metrics.outcome_of(delivery(outcome=Apply(step, [], []),
                                       result=["duplicate", "paid"])) == "duplicate"
    assert metrics.outcome_of(delivery(outcome=Ack("nothing"))) == "acked"
    assert metrics.outcome_of(delivery(outcome=Ack("again", duplicate=True))) == "duplicate"
    assert metrics.outcome_of(delivery(outcome=Reject("junk"))) == "dead_lettered"
    assert metrics.outcome_of(delivery(error=RuntimeError("down"))) == "retried"
    assert metrics.outcome_of(delivery(waits="node away")) == "waiting"
    assert metrics.type_of(delivery()) == "malformed"  # junk makes up no label


@pytest.mark.unit
def test_a_traceparent_is_read_as_the_w3c_says() -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    hop = tracing.parse(good)
    assert hop is not None and hop.traceparent == good
    assert tracing.parse(good.upper()) == hop
    for bad in ("", "junk", "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-" + "0" * 16 + "-01",
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"):
        assert tracing.parse(bad) is None, bad
    child = tracing.child(hop)
    assert child.trace_id == hop.trace_id and child.span_id != hop.span_id
    assert tracing.child(None).trace_id != hop.trace_id


@pytest.mark.integration
def test_the_dashboards_snapshot_says_what_the_api_says(shop: Shop) -> None:
    placed = [shop.order("alice", ("item1", 1)), shop.order("bob", ("item1", 1)),
              shop.order("alice", ("item2", 1)), shop.order("alice", ("item1", 1))]
    for consumer in shop.consumers.values():
        consumer.ensure_groups()
    shop.settle(["payment"])  # the rest waits: lag and pending to see

    async def look() -> tuple[dict, list]:
        r = shop.async_client()
        try:
            board = Board(r, shop.topology, interval_s=0)
            snapshot = await board.snapshot()
            topology = await shop_topology.with_gateway_stores(r, shop.topology)
            return snapshot, await ops.streams(r, topology)
        finally:
            await r.aclose()

    snapshot, health = asyncio.run(look())
    for row in snapshot["flow"]:
        streams = [s for s in health if shop.topology.split(s.name)[0] == row["name"]]
        assert row["length"] == sum(s.length for s in streams)
        assert row["writer"] == shop_topology.WRITERS[row["name"]]
        for group in row["groups"]:
            assert group["lag"] == sum(g.lag or 0 for s in streams for g in s.groups
                                       if g.name == group["name"]), (row["name"], group)
            assert group["pending"] == sum(g.pending for s in streams for g in s.groups
                                           if g.name == group["name"])
    flow = {row["name"]: {g["name"]: g for g in row["groups"]} for row in snapshot["flow"]}
    assert flow["payments.completed"]["inventory"]["lag"] == 3  # alice's three charges
    assert flow["orders.created"]["order-status"]["lag"] == 4
    statuses = snapshot["statuses"]
    assert statuses["totals"]["pending"] == 4  # the projector has not run yet
    assert sum(statuses["series"]["pending"]) == 4  # all four placed in the last minutes
    assert {o["id"] for o in snapshot["recent"]} == set(placed)
    assert snapshot["orders_total"] == 4 and snapshot["dead_total"] == 0

    shop.settle()
    snapshot, _ = asyncio.run(look())
    assert snapshot["statuses"]["totals"] | {} == {"pending": 0, "paid": 0, "failed": 0,
                                                   "completed": 2, "rejected": 1,
                                                   "refunded": 1}
    assert sum(sum(series) for series in snapshot["statuses"]["series"].values()) == 4


@pytest.mark.integration
def test_the_dashboard_page_is_public_and_its_data_an_operators(shop: Shop) -> None:
    with api(shop) as client:
        page = client.get("/dashboard")
        assert page.status_code == 200 and "dashboard.js" in page.text
        assert client.get("/dashboard/static/dashboard.js").status_code == 200
        missing = client.get("/dashboard/static/secrets.txt")
        assert missing.status_code == 404 and "no dashboard file" in missing.json()["detail"]
        nobody = client.get("/dashboard/events")
        assert nobody.status_code == 401 and "token" in nobody.json()["detail"]
        customer = client.get("/dashboard/events", headers=token(shop, "alice"))
        assert customer.status_code == 403 and "operator" in customer.json()["detail"]


@pytest.mark.unit
def test_an_event_line_is_colored_by_what_it_means_on_a_terminal_only() -> None:
    from shopctl import events

    fields = {"type": "payment.failed", "order_id": "ord_1", "occurred_at": "2026-12-02T07:00:00Z",
              "traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01",
              "data": '{"reason":"insufficient_funds"}'}
    record = events.entry("payments.failed", "1-0", fields, "order_id")
    assert record["trace_id"] == "ab" * 16 and record["data"] == {"reason": "insufficient_funds"}
    plain = events.line(record, "order_id")
    colored = events.line(record, "order_id", color=True)
    assert "\033[" not in plain and "order=ord_1" in plain
    assert "\033[31mpayment.failed" in colored and colored.endswith(plain.split("order=")[1])
    junk = events.entry("orders.created", "2-0", {"hello": "world"}, "order_id")
    assert events.line(junk, "order_id", color=True).endswith('order=-  {"hello":"world"}')


@pytest.mark.unit
def test_the_exporters_address_is_logged_without_its_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="streams.tracing")
    try:
        assert tracing.configure("payment", InMemorySpanExporter(), environ={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "https://me:s3cret@otel.example.com:4318?key=k3y"})
    finally:
        tracing.shutdown()
    assert "spans of payment exported to https://otel.example.com:4318" in caplog.text
    assert "s3cret" not in caplog.text and "k3y" not in caplog.text
    assert not tracing.configure("payment", environ={})  # no endpoint: off


@pytest.mark.unit
@pytest.mark.parametrize("command", [["lag"], ["events"], ["events", "--follow"]])
def test_the_command_line_says_when_redis_does_not_answer(
    command: list[str], capsys: pytest.CaptureFixture[str],
) -> None:
    from shopctl.cli import main

    assert main([*command, "--redis-url", "redis://127.0.0.1:1/0"]) == 1
    said = capsys.readouterr().err
    assert f"shopctl {command[0]}: Redis does not answer" in said and "--redis-url" in said
