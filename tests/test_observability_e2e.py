"""The shop as an operator watches it, its real processes started by the
launcher (with a gateway delivering webhooks): the dashboard in a real
headless Chromium, each process's metrics port, and the command line.

The browser is Debian's ``chromium``, driven by Playwright without any
browser download (``.ci/run`` installs it when it is missing; elsewhere
this test says what is missing). Its screenshots are saved in
``test-results/``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from shopctl.redis_server import free_port
from tests.receivers import Receiver
from tests.running import Running

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

RESULTS = Path(__file__).resolve().parent.parent / "test-results"
CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


class Shop:
    def __init__(self, running: Running, api_port: int, hooks: Receiver) -> None:
        self.running, self.hooks = running, hooks
        self.base = f"http://127.0.0.1:{api_port}"
        self.http = httpx2.Client(base_url=self.base, timeout=10,
                                  headers=running.auth("operator"))

    def place(self, customer: str = "alice", **lines: int) -> str:
        answer = self.http.post("/orders", headers=self.running.auth(customer), json={
            "lines": [{"product_id": p, "quantity": q} for p, q in lines.items()]})
        assert answer.status_code == 202, answer.text
        return answer.json()["id"]

    def final(self, order_id: str, timeout_s: float = 30) -> dict:
        deadline = time.monotonic() + timeout_s
        while (order := self.http.get(f"/orders/{order_id}").json())["status"] in (
                "pending", "paid"):
            assert time.monotonic() < deadline, order
            time.sleep(0.05)
        return order

    def shopctl(self, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "shopctl", *args], capture_output=True, text=True,
            timeout=timeout_s, env=os.environ | self.env(), check=False)

    def env(self) -> dict[str, str]:
        return {"REDIS_URL": self.running.redis_url, "SHOP_API_URL": self.base,
                "DATA_DIR": str(self.running.data_dir), "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    hooks = Receiver().start()
    api_port = free_port()
    running = Running(
        tmp_path_factory.mktemp("observed"), free_port(), api_port, "--gateway", "webhooks.yaml",
        env={"METRICS_PORT": str(free_port()), "WEBHOOK_URL": hooks.url + "/hooks",
             "WEBHOOK_SECRET": "the-e2e-receivers-secret"})
    try:
        running.wait_for("ready: API on")
        shop = Shop(running, api_port, hooks)
        yield shop
        shop.http.close()
    finally:
        running.stop()
        hooks.stop()


def ports(running: Running) -> dict[str, int]:
    """Each worker's metrics port, as the launcher printed them."""
    line = next(line for line in running.lines if "metrics: http" in line)
    return {name: int(port) for name, port in re.findall(r"([a-z]+(?:-\d+)?) :(\d+)", line)}


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    text = httpx2.get(url, timeout=10).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return sum(v for (n, got), v in found.items()
               if n == name and set(labels.items()) <= set(got))


def test_every_process_serves_its_metrics_on_the_port_the_launcher_printed(shop: Shop) -> None:
    order_id = shop.place(item1=1)
    assert shop.final(order_id)["status"] == "completed"
    found = ports(shop.running)
    assert set(found) == {"projector", "payment-1", "inventory-1", "gateway"}
    assert len(set(found.values())) == 4
    deadline = time.monotonic() + 20
    while True:  # the webhook of the order's final status
        with contextlib.suppress(httpx2.ConnectError):  # the gateway may be starting
            gateway = scrape(f"http://127.0.0.1:{found['gateway']}/metrics")
            if value(gateway, "gateway_deliveries_total", outcome="delivered") >= 1:
                break
        assert time.monotonic() < deadline, "no delivery counted by the gateway:\n" + "\n".join(
            line for line in shop.running.lines if "gateway" in line)
        time.sleep(0.2)
    assert value(gateway, "gateway_endpoint_active", endpoint="receiver") == 1
    assert value(gateway, "streams_events_handled_total", group="gateway.final-statuses") >= 1
    payment = scrape(f"http://127.0.0.1:{found['payment-1']}/metrics")
    assert value(payment, "streams_events_handled_total", group="payment",
                 type="order.created", outcome="applied") >= 1
    assert value(payment, "streams_commit_duration_seconds_count", group="payment") >= 1
    projector = scrape(f"http://127.0.0.1:{found['projector']}/metrics")
    assert value(projector, "shop_order_settle_seconds_count", status="completed") >= 1
    api = scrape(f"{shop.base}/metrics")
    assert value(api, "shop_orders_accepted_total") >= 1
    assert value(api, "streams_consumer_lag_messages", stream="orders.created",
                 group="payment") == 0


def test_the_command_line_reads_the_streams_and_places_and_watches_orders(shop: Shop) -> None:
    placed = shop.shopctl("order", "place", "--customer", "alice", "item1=2", "item2=1")
    assert placed.returncode == 0, placed.stderr
    order_id = placed.stdout.strip()
    assert re.fullmatch(r"ord_[0-9a-f]{16}", order_id), placed.stdout
    assert f"order {order_id} pending for alice" in placed.stderr
    watched = shop.shopctl("order", "watch", order_id, "--timeout", "30")
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.splitlines()[-1] == f"{order_id} completed"
    assert "inventory.reserved" in watched.stdout
    bad = shop.shopctl("order", "place", "--customer", "alice", "item1=lots")
    assert bad.returncode == 1 and "not PRODUCT=QUANTITY" in bad.stderr
    unknown = shop.shopctl("order", "place", "--customer", "alice", "nope=1")
    assert unknown.returncode == 1 and "unknown product(s): 'nope'" in unknown.stderr

    mine = shop.shopctl("events", "--order", order_id, "--json")
    assert mine.returncode == 0, mine.stderr
    records = [json.loads(line) for line in mine.stdout.splitlines()]
    assert [r["type"] for r in records] == ["order.created", "payment.completed",
                                            "inventory.reserved"]
    assert len({r["trace_id"] for r in records}) == 1  # one trace
    assert records[0]["data"]["total_cents"] == 2 * 2400 + 1200

    # Following: what is added after it starts, as it comes. Its first line, the
    # newest entry, says it has noted where it follows from.
    follower = subprocess.Popen(
        [sys.executable, "-m", "shopctl", "events", "--follow", "--limit", "1", "--stream",
         "orders.created"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=os.environ | shop.env())
    try:
        assert follower.stdout is not None
        newest = follower.stdout.readline()
        assert "order.created" in newest, newest
        later = shop.place(item2=1)
        line = follower.stdout.readline()
        assert f"order={later}" in line and "order.created" in line, line
    finally:
        follower.terminate()
        follower.wait(10)

    lag = shop.shopctl("lag", "--json")
    assert lag.returncode == 0, lag.stderr
    rows = [json.loads(line) for line in lag.stdout.splitlines()]
    groups = {(r["stream"], r["group"]) for r in rows}
    assert {("orders.created", "payment"), ("payments.completed", "inventory"),
            ("gateway.hooks", "forwarder")} <= groups
    assert all(r["pending"] >= 0 and r["partition"] == "-" for r in rows)
    table = shop.shopctl("lag")
    assert table.stdout.splitlines()[0].split() == ["STREAM", "PART", "GROUP", "LAG", "PENDING",
                                                   "CONSUMERS", "DEAD"]


@pytest.fixture
def browser() -> Iterator[Callable[..., Any]]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's `chromium` (apt-get install "
                    "chromium; .ci/run does) or set CHROMIUM to a Chromium binary")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched.new_page
        finally:
            launched.close()


def test_the_dashboard_in_a_real_browser_shows_what_the_api_says(
    shop: Shop, browser: Callable[..., Any],
) -> None:
    RESULTS.mkdir(exist_ok=True)
    page = browser(viewport={"width": 1200, "height": 1300})
    page.goto(f"{shop.base}/dashboard")
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#token", "shop_not_a_token")
    page.click("#login button")
    page.wait_for_selector("text=the token is unknown")
    page.fill("#token", shop.running.token("operator"))
    page.click("#login button")
    page.wait_for_selector("[data-stream='orders.created']")

    # An order placed now appears, and opens its timeline.
    order_id = shop.place(item1=1)
    shop.final(order_id)
    row = f"[data-order='{order_id}'] button"
    page.wait_for_selector(row, timeout=15_000)
    page.click(row)
    page.wait_for_selector(
        "#timeline-events li[data-type='inventory.reserved']", timeout=10_000)
    kinds = page.eval_on_selector_all(
        "#timeline-events li", "items => items.map(i => i.dataset.type)")
    assert kinds == ["order.created", "payment.completed", "inventory.reserved"]

    # Its numbers are the API's (once a snapshot after the last change has come).
    def shown() -> Any:
        return page.evaluate("""() => ({
            flow: Object.fromEntries([...document.querySelectorAll('[data-stream]')].map(s =>
                [s.dataset.stream, {
                    length: +s.querySelector('.length b').textContent,
                    dead: +s.querySelector('.dead b').textContent,
                    groups: Object.fromEntries([...s.querySelectorAll('[data-group]')].map(g =>
                        [g.dataset.group, [+g.querySelector('.lag b').textContent,
                                           +g.querySelector('.pending b').textContent]]))}])),
            totals: Object.fromEntries([...document.querySelectorAll('[data-status]')].map(s =>
                [s.dataset.status, +s.querySelector('.count').textContent])),
        })""")

    def api_says() -> Any:
        flow: dict[str, dict] = {}
        for stream in shop.http.get("/ops/streams").json():
            base = re.sub(r"\{p\d+\}$", "", stream["name"])
            row = flow.setdefault(base, {"length": 0, "dead": 0, "groups": {}})
            row["length"] += stream["length"]
            row["dead"] += stream["dead_letters"]
            for g in stream["groups"]:
                lag, pending = row["groups"].get(g["name"], [0, 0])
                row["groups"][g["name"]] = [lag + (g["lag"] or 0), pending + g["pending"]]
        totals = {s: shop.http.get("/orders", params={"status": s, "limit": 1}).json()["total"]
                  for s in ("pending", "paid", "completed", "rejected", "refunded", "failed")}
        return {"flow": flow, "totals": totals}

    deadline = time.monotonic() + 15
    while (on_page := shown()) != (wanted := api_says()):
        assert time.monotonic() < deadline, {
            part: (on_page[part].get(k), wanted[part].get(k)) for part in ("flow", "totals")
            for k in on_page[part].keys() | wanted[part].keys()
            if on_page[part].get(k) != wanted[part].get(k)}
        time.sleep(0.3)
    assert on_page["totals"]["completed"] >= 1

    # A dead letter appears, and is replayed from the page.
    r = redis.Redis.from_url(shop.running.redis_url, decode_responses=True)
    r.xadd("orders.created", {"hello": "world"})
    r.close()
    page.wait_for_selector("#dead [data-ref] button", timeout=15_000)
    ref = page.get_attribute("#dead [data-ref]", "data-ref")
    page.click("#dead [data-ref] button")
    page.wait_for_selector(f"#replayed:has-text('{ref}: ')")
    # The gateway's endpoint, active.
    page.wait_for_selector(
        "[data-endpoint='webhooks/receiver'] .badge.active")
    page.screenshot(path=str(RESULTS / "dashboard.png"), full_page=True)

    phone = browser(viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.goto(f"{shop.base}/dashboard")
    phone.fill("#token", shop.running.token("operator"))
    phone.click("#login button")
    phone.wait_for_selector("[data-stream='orders.created']")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width}px wide on a 390px phone"
    phone.screenshot(path=str(RESULTS / "dashboard-phone.png"))
