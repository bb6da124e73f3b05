"""The original Flask order and inventory services, answered by the gateway's
``legacy-flask.yaml`` on the running system: the original's own curl
commands, run as they are written, and its PowerShell ones; then every
other answer the original gave (its orders, its stock, its errors)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator

import httpx2
import pytest
import redis

from shop import keys
from shopctl.redis_server import free_port, port_is_free
from tests.running import Running

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

# The original's instructions, word for word.
CURL = [
    "curl http://localhost:5001/inventory/item1",
    """curl -X POST http://localhost:5000/orders -H "Content-Type: application/json" -d '{"item": "item1", "quantity": 5}'""",  # noqa: E501
    "curl http://localhost:5001/inventory/item1",
]
POWERSHELL = """
$headers = @{ "Content-Type" = "application/json" }
$body = @{ item = "item1"; quantity = 5 } | ConvertTo-Json
Invoke-RestMethod -Method Post -Uri "http://localhost:5000/orders" -Headers $headers -Body $body
Invoke-RestMethod -Method Get -Uri "http://localhost:5001/inventory"
"""


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, int, int]]:
    """The shop with the legacy gateway, on the original's ports when they
    are free (else on two others, and the commands say those)."""
    orders, inventory = ((5000, 5001) if port_is_free(5000) and port_is_free(5001)
                         else (free_port(), free_port()))
    shop = Running(tmp_path_factory.mktemp("legacy"), free_port(), free_port(),
                   "--gateway", "legacy-flask.yaml",
                   env={"LEGACY_ORDERS_LISTEN": f"127.0.0.1:{orders}",
                        "LEGACY_INVENTORY_LISTEN": f"127.0.0.1:{inventory}"})
    try:
        shop.wait_for("ready: API on")
        yield shop, orders, inventory
    finally:
        assert shop.stop() == 0, "\n".join(shop.lines)


def on_ports(text: str, orders: int, inventory: int) -> str:
    return text.replace("localhost:5000", f"localhost:{orders}").replace(
        "localhost:5001", f"localhost:{inventory}")


def test_the_original_instructions_work_as_they_are(legacy: tuple[Running, int, int]) -> None:
    shop, orders, inventory = legacy
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed on this machine (apt install curl)")
    answers = []
    for line in CURL:
        done = subprocess.run(["bash", "-c", on_ports(line, orders, inventory)],
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        answers.append(json.loads(done.stdout))
    before, placed, after = answers
    assert before == {"item": "item1", "quantity": 100}
    assert placed["message"] == "Order registered successfully"
    assert {k: v for k, v in placed["order"].items() if k != "id"} == {
        "item": "item1", "quantity": 5, "status": "confirmed"}
    assert after == {"item": "item1", "quantity": 95}
    # And the order is a real one of the shop: the walk-in customer's, completed.
    with httpx2.Client(base_url=shop_url(shop), headers=shop.auth("operator"),
                       timeout=10) as http:
        order = http.get(f"/orders/{placed['order']['id']}").json()
    assert (order["customer_id"], order["status"]) == ("walk-in", "completed")


def test_the_original_powershell_requests(legacy: tuple[Running, int, int]) -> None:
    """What Invoke-RestMethod sends: the body ConvertTo-Json made (indented,
    CRLF, the hashtable's keys in any order). With PowerShell on the machine,
    the original's script itself runs too."""
    shop, orders, inventory = legacy
    converted = '{\r\n  "quantity": 5,\r\n  "item": "item1"\r\n}'
    with httpx2.Client(timeout=30, headers={"User-Agent": "Mozilla/5.0 (Linux) PowerShell/7.4"}
                       ) as http:
        placed = http.post(f"http://localhost:{orders}/orders", content=converted,
                           headers={"Content-Type": "application/json"})
        assert placed.status_code == 201, placed.text
        assert placed.json()["order"]["status"] == "confirmed"
        stock = http.get(f"http://localhost:{inventory}/inventory")
    assert stock.status_code == 200 and stock.json()["item2"] == 50
    assert stock.json()["item1"] <= 95  # after this test's order, and the curl test's
    if shutil.which("pwsh"):
        done = subprocess.run(["pwsh", "-NoProfile", "-Command",
                               on_ports(POWERSHELL, orders, inventory)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "Order registered successfully" in done.stdout and "item2" in done.stdout


def test_every_other_answer_of_the_original(legacy: tuple[Running, int, int]) -> None:
    shop, orders, inventory = legacy
    with httpx2.Client(base_url=f"http://127.0.0.1:{orders}", timeout=30) as order_service, \
            httpx2.Client(base_url=f"http://127.0.0.1:{inventory}", timeout=30) as stock:
        start = stock.get("/inventory/item1").json()["quantity"]
        taken = stock.put("/inventory/item1", json={"quantity": 10})
        assert taken.status_code == 200
        assert taken.json() == {"message": "Inventory for item1 updated",
                                "new_quantity": start - 10}
        too_much = stock.put("/inventory/item1", json={"quantity": start})
        assert (too_much.status_code, too_much.json()) == (400,
                                                           {"error": "Insufficient inventory"})
        short = order_service.post("/orders", json={"item": "item2", "quantity": 60})
        assert (short.status_code, short.json()) == (400, {"error": "Insufficient inventory"})
        for answer in (stock.get("/inventory/nope"), stock.put("/inventory/nope",
                                                               json={"quantity": 1}),
                       order_service.post("/orders", json={"item": "nope", "quantity": 1})):
            assert (answer.status_code, answer.json()) == (404, {"error": "Item not found"})
        missing = order_service.post("/orders", json={"item": "item1"})
        assert missing.status_code == 400
        assert missing.json() == {"error": "body: 'quantity' is a required property"}
        not_json = order_service.post("/orders", content=b"item=item1",
                                      headers={"Content-Type": "application/json"})
        assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
        assert stock.get("/nowhere").json() == {"error": "Not found"}
        listed = order_service.get("/orders")
        assert listed.status_code == 200
        assert all(set(o) == {"id", "item", "quantity", "status"} for o in listed.json())
        assert [o["status"] for o in listed.json()].count("confirmed") >= 1
        assert listed.json()[-1]["item"] == "item2"  # oldest first, as the original kept them
        assert listed.json()[-1]["status"] == "refunded"
    # The legacy PUT is a stock adjustment, recorded as an event like any other.
    with redis.Redis.from_url(shop.redis_url, decode_responses=True) as r:
        adjusted = [fields for _id, fields in r.xrange(keys.adjustments("item1"))]
    assert any(f["reason"] == "legacy PUT /inventory/item1" and f["delta"] == "-10"
               and f["type"] == "inventory.adjusted" for f in adjusted), adjusted


def shop_url(shop: Running) -> str:
    line = next(line for line in shop.lines if "ready: API on" in line)
    return line.split("ready: API on ", 1)[1].split(" ", 1)[0]
