"""The real processes, started by the launcher `make up` uses, on free ports
and a throwaway data folder; orders over HTTP, polled to their final status."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
import redis
import redis.asyncio

from shop.statuses import FINAL_STATUSES
from shopctl import demo
from shopctl.redis_server import free_port
from tests import invariants
from tests.conftest import bearer, make_token
from tests.running import Running
from tests.shop import statuses

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def token_for(shop: Running, customer: str) -> dict[str, str]:
    """A customer token, made with the command line as a user would."""
    made = subprocess.run(
        [sys.executable, "-m", "shopctl", "token", "create", "--customer", customer,
         "--redis-url", shop.redis_url], capture_output=True, text=True, timeout=30, check=True)
    return {"Authorization": f"Bearer {made.stdout.strip()}"}


def poll_until_final(http: httpx2.Client, order_id: str, timeout_s: float = 30) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        order = http.get(f"/orders/{order_id}").json()
        if order["status"] in FINAL_STATUSES or time.monotonic() > deadline:
            return order
        time.sleep(0.05)


def test_the_launcher_runs_the_whole_system_and_keeps_its_data(tmp_path: Path) -> None:
    redis_port, api_port = free_port(), free_port()
    shop = Running(tmp_path, redis_port, api_port)
    try:
        shop.wait_for("ready: API on")
        with httpx2.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10,
                           headers=shop.auth("operator")) as http:
            placed = {
                case: http.post("/orders", headers=shop.auth(customer), json={"lines": [
                    {"product_id": product, "quantity": quantity}]})
                for case, customer, product, quantity in [
                    ("happy", "alice", "item1", 2),
                    ("refund", "alice", "item2", 60),  # 50 in stock
                    ("declined", "bob", "item1", 1),   # Bob has 500 cents
                ]
            }
            assert {c: a.status_code for c, a in placed.items()} == dict.fromkeys(placed, 202)
            final = {c: poll_until_final(http, a.json()["id"]) for c, a in placed.items()}
            assert {c: o["status"] for c, o in final.items()} == {
                "happy": "completed", "refund": "refunded", "declined": "rejected"}
            assert [h["type"] for h in final["happy"]["history"]] == [
                "order.created", "payment.completed", "inventory.reserved"]
            assert http.get("/products/item1").json()["stock"] == 98
            assert http.get("/customers/alice").json()["balance_cents"] == 1_000_000 - 4800
        client = redis.Redis(port=redis_port, decode_responses=True)
        invariants.check(
            client,
            {p["id"]: p["stock"] for p in demo.PRODUCTS},
            {c["id"]: c["balance_cents"] for c in demo.CUSTOMERS},
        )
        client.close()
        happy = final["happy"]["id"]
        shop.wait_for(f"order={happy} status paid → completed")
    finally:
        code = shop.stop()
    log = "\n".join(shop.lines)
    assert code == 0, log
    # One readable line per event, prefixed by the process that handled it.
    assert any(line.startswith("payment-1  |") and f"order={happy} charged 4800 (Alice 995200 "
               "left) → payments.completed" in line for line in shop.lines), log
    assert any(line.startswith("inventory-1|") and f"order={happy} took stock" in line
               for line in shop.lines), log
    assert any(line.startswith("api        |") and f"order={happy} accepted for alice: 1 "
               "line(s), 4800 cents → orders.created" in line for line in shop.lines), log
    assert "Traceback" not in log
    assert shop.lines[-1].endswith("stopped")
    assert (tmp_path / "redis" / "appendonlydir").is_dir()

    # A second start keeps the data and leaves the demo records as they are.
    tokens = {who: shop.token(who) for who in ("operator", "alice", "bob")}
    again = Running(tmp_path, redis_port, api_port)
    try:
        again.wait_for("ready: API on")
        # The demo tokens are kept, and printed again.
        assert {who: again.token(who) for who in tokens} == tokens
        assert any(line.endswith(f"alice     {tokens['alice']}") for line in again.lines)
        with httpx2.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10,
                           headers=again.auth("operator")) as http:
            assert http.get("/orders").json()["total"] == 3
            assert http.get("/products/item1").json()["stock"] == 98
        assert any("product item1 already there, kept as it is" in line for line in again.lines)
    finally:
        assert again.stop() == 0


def test_a_burst_of_ctrl_c_still_stops_everything(tmp_path: Path) -> None:
    """Mashing Ctrl-C stops everything once, cleanly: the handlers only set a flag."""
    shop = Running(tmp_path, free_port(), free_port(), "--no-demo")
    shop.wait_for("ready: API on")
    for _ in range(20):
        shop.proc.send_signal(signal.SIGINT)
    assert shop.proc.wait(60) == 0
    shop.reader.join(5)
    assert shop.lines[-1].endswith("stopped")


@pytest.mark.parametrize("which", ["redis", "api"])
def test_a_taken_port_is_a_clear_error_naming_the_setting(tmp_path: Path, which: str) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = {"redis": port, "api": free_port()} if which == "redis" else {
            "redis": free_port(), "api": port}
        result = subprocess.run(
            [sys.executable, "-m", "shopctl", "up", "--redis-port", str(ports["redis"]),
             "--api-port", str(ports["api"]), "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        )
    assert result.returncode == 1
    assert f"port {port} is already in use" in result.stdout
    setting = "set REDIS_PORT to a free port, or set REDIS_URL" if which == "redis" else (
        "set API_PORT to a free port")
    assert setting in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


@pytest.mark.parametrize("partitions", [1, 4])
def test_200_orders_at_once_on_the_running_system(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], partitions: int
) -> None:
    """The concurrency test again, on the real processes: two replicas of each
    worker, everything over HTTP, at one partition and at four."""
    redis_port, api_port = free_port(), free_port()
    shop = Running(tmp_path, redis_port, api_port, "--no-demo", "--partitions", str(partitions),
                   "--payment-workers", "2", "--inventory-workers", "2")
    base = f"http://127.0.0.1:{api_port}"
    customers = [f"c{i}" for i in range(20)]
    try:
        shop.wait_for("ready: API on")
        with httpx2.Client(base_url=base, timeout=10, headers=shop.auth("operator")) as http:
            assert http.post("/products", json={"id": "item2", "name": "Cup",
                                                "price_cents": 1200, "stock": 50}).is_success
            for customer in customers:
                assert http.post("/customers", json={
                    "id": customer, "name": customer, "email": f"{customer}@example.com",
                    "balance_cents": 1_000_000}).is_success
        # One token made with the command line, as a user would; the others
        # in-process (a process start each would be most of this test's time).
        connect = lambda: redis.asyncio.Redis(port=redis_port, decode_responses=True)  # noqa: E731
        tokens = {c: bearer(make_token(connect, "customer", c, partitions)) for c in customers}
        tokens["c0"] = token_for(shop, "c0")

        async def place_all() -> list[httpx2.Response]:
            limits = httpx2.Limits(max_connections=50)
            async with httpx2.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
                return await asyncio.gather(*(
                    http.post("/orders", headers=tokens[customers[i % 20]], json={"lines": [
                        {"product_id": "item2", "quantity": 1}]})
                    for i in range(200)
                ))

        started = time.perf_counter()
        answers = asyncio.run(place_all())
        accepted = time.perf_counter() - started
        assert [a.status_code for a in answers] == [202] * 200
        client = redis.Redis(port=redis_port, decode_responses=True)
        ids = [a.json()["id"] for a in answers]
        deadline = time.monotonic() + 60
        while not all(s in FINAL_STATUSES for s in statuses(client, ids, partitions)):
            assert time.monotonic() < deadline, "orders did not settle"
            time.sleep(0.02)
        settled = time.perf_counter() - started
        counts = invariants.check(client, {"item2": 50}, dict.fromkeys(customers, 1_000_000),
                                  partitions=partitions)
        client.close()
        assert counts == {"completed": 50, "refunded": 150}
    finally:
        assert shop.stop() == 0
    with capsys.disabled():
        print(f"\n  running system ({partitions} partition(s)): 200 orders accepted in "
              f"{accepted:.2f}s, all final in "
              f"{settled:.2f}s ({200 / settled:.0f} orders/s settled; API, projector, "
              "2 payment and 2 inventory processes on 2 cores)")


def test_a_launcher_killed_by_sigkill_takes_its_children_with_it(tmp_path: Path) -> None:
    shop = Running(tmp_path, free_port(), free_port(), "--no-demo")
    shop.wait_for("ready: API on")
    children = shop.children
    assert {"redis", "api", "projector", "payment-1", "inventory-1"} <= set(children)
    shop.proc.kill()  # no handler runs: only the kernel can tell the children
    shop.proc.wait(10)
    deadline = time.monotonic() + 20
    alive = dict(children)
    while alive:
        alive = {name: pid for name, pid in alive.items() if _alive(pid)}
        assert time.monotonic() < deadline, f"still running after the launcher died: {alive}"
        time.sleep(0.1)
    # And a new launcher starts on the same folder and ports, with the data kept.
    again = Running(tmp_path, shop_port(shop, "--redis-port"), shop_port(shop, "--api-port"),
                    "--no-demo")
    try:
        again.wait_for("ready: API on")
    finally:
        assert again.stop() == 0


def test_a_second_launcher_on_a_running_data_folder_says_what_runs_where(
    tmp_path: Path
) -> None:
    api_port = free_port()
    shop = Running(tmp_path, free_port(), api_port, "--no-demo")
    try:
        shop.wait_for("ready: API on")
        second = subprocess.run(
            [sys.executable, "-m", "shopctl", "up", "--data-dir", str(tmp_path),
             "--redis-port", str(free_port()), "--api-port", str(free_port())],
            capture_output=True, text=True, timeout=60,
            env={k: v for k, v in os.environ.items() if k != "REDIS_URL"})
    finally:
        assert shop.stop() == 0
    assert second.returncode == 1
    assert f"shopctl is already running on {tmp_path.resolve()} (pid {shop.proc.pid}" in \
        second.stdout
    assert f"API on http://127.0.0.1:{api_port}" in second.stdout
    assert "Traceback" not in second.stdout + second.stderr


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited; it waits for its reaper


def shop_port(shop: Running, option: str) -> int:
    args = shop.proc.args
    assert isinstance(args, list)
    return int(args[args.index(option) + 1])


def test_a_redis_with_a_password_works_end_to_end_and_the_password_is_never_printed(
    tmp_path: Path
) -> None:
    from shopctl.redis_server import command, wait_until_ready

    password = "pw-" + os.urandom(8).hex()
    port = free_port()
    server = subprocess.Popen(
        [*command(port, tmp_path, aof=False), "--requirepass", password],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    try:
        wait_until_ready(url)
        with pytest.raises(redis.AuthenticationError):  # it does need the password
            redis.Redis(port=port).ping()
        shop = Running(tmp_path / "data", free_port(), api_port := free_port(), "--redis-url",
                       url)
        try:
            shop.wait_for("ready: API on")
            with httpx2.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10,
                               headers=shop.auth("alice")) as http:
                placed = http.post("/orders", json={"lines": [
                    {"product_id": "item1", "quantity": 1}]})
                assert placed.status_code == 202, placed.text
                assert poll_until_final(http, placed.json()["id"])["status"] == "completed"
            made = subprocess.run(
                [sys.executable, "-m", "shopctl", "token", "list", "--redis-url", url],
                capture_output=True, text=True, timeout=30)
            assert made.returncode == 0 and "demo-alice" in made.stdout
            dead = subprocess.run(
                [sys.executable, "-m", "shopctl", "dead", "list", "--redis-url", url],
                capture_output=True, text=True, timeout=30)
            assert dead.returncode == 0 and "0 dead letter(s)" in dead.stdout
        finally:
            assert shop.stop() == 0
        log = "\n".join(shop.lines)
        assert f"using your Redis at redis://:***@127.0.0.1:{port}/0" in log
        assert password not in log
    finally:
        server.terminate()
        server.wait(10)
