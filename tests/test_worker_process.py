"""Processes as they run in production: signals and Redis outages."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio
from fastapi.testclient import TestClient

from shop import topology
from shopctl import processes
from shopctl.redis_server import RedisServer, free_port
from streams.connection import connect_async
from streams.consumer import Consumer
from tests.conftest import api_app, bearer, make_token
from tests.shop import GROUPS, Shop

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def wait_until(condition, timeout_s: float = 15) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.mark.parametrize("module", ["payment_worker", "inventory_worker", "status_projector"])
def test_a_worker_process_stops_on_sigterm_and_exits_0(
    module: str, redis_server: RedisServer, real: redis.Redis
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", module],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ | {"REDIS_URL": redis_server.url, "WORKER_NAME": "w1"},
    )
    try:
        # It is up once its groups exist.
        wait_until(
            lambda: any(real.exists(s) and real.xinfo_groups(s) for s in topology.SHOP.streams)
        )
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "SIGTERM received; finishing the batch in hand" in output
    assert "consumer w1 stopped" in output


def test_a_worker_rides_out_a_redis_restart_and_resumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(free_port(), tmp_path, aof=True).start()
    url = server.url
    shop = Shop(
        redis.Redis.from_url(url, decode_responses=True),
        lambda: redis.asyncio.Redis.from_url(url, decode_responses=True),
    )
    shop.product("item1", stock=10)
    shop.customer("alice", 10_000)
    consumers = [
        Consumer(
            redis.Redis.from_url(url, decode_responses=True, socket_timeout=5),
            topology.SHOP,
            group,
            handlers,
            block_ms=100,
        )
        for group, handlers in GROUPS.items()
    ]
    threads = [threading.Thread(target=c.run, daemon=True) for c in consumers]
    caplog.set_level("WARNING", logger="streams.consumer")

    def said(text: str) -> int:
        return sum(text in r.getMessage() for r in caplog.records)

    for thread in threads:
        thread.start()
    try:
        first = shop.order("alice", ("item1", 1))
        wait_until(lambda: shop.status(first) == "completed")
        server.stop()  # SIGTERM: the AOF is flushed
        wait_until(lambda: said("redis unreachable") == len(consumers))
        assert all(t.is_alive() for t in threads)
        server.start()  # back from its AOF
        second = shop.order("alice", ("item1", 1))
        wait_until(lambda: shop.status(second) == "completed")
        wait_until(lambda: said("redis is back") == len(consumers))
        # one line when the outage starts and one when it ends, not one per poll
        assert said("redis unreachable") == len(consumers)
        assert shop.stock("item1") == 8 and shop.balance("alice") == 8_000
    finally:
        for consumer in consumers:
            consumer.stop()
        for thread in threads:
            thread.join(5)
        server.stop()


def test_a_worker_waiting_out_an_outage_still_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "payment_worker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=os.environ | {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # it is backing off once it says so
            if "redis unreachable" in line:
                break
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "Traceback" not in output


def test_the_api_answers_503_during_an_outage_and_recovers_by_itself(tmp_path: Path) -> None:
    server = RedisServer(free_port(), tmp_path, aof=True).start()
    shop = Shop(
        redis.Redis.from_url(server.url, decode_responses=True),
        lambda: redis.asyncio.Redis.from_url(server.url, decode_responses=True),
    )
    shop.product("item1", stock=10)
    shop.customer("alice", 10_000)
    body = {"lines": [{"product_id": "item1", "quantity": 1}]}
    alice = bearer(
        make_token(
            lambda: redis.asyncio.Redis.from_url(server.url, decode_responses=True),
            "customer",
            "alice",
        )
    )
    try:
        with TestClient(api_app(connect_async(server.url)), headers=alice) as api:
            first = api.post("/orders", json=body)
            assert first.status_code == 202
            server.stop()
            for _ in range(3):
                down = api.post("/orders", json=body)
                assert down.status_code == 503 and down.headers["retry-after"] == "1"
            server.start()  # back from its AOF; the same app, no restart
            again = api.post("/orders", json=body)
            assert again.status_code == 202
            assert api.get(f"/orders/{first.json()['id']}").status_code == 200
            assert api.get("/orders").json()["total"] == 2
    finally:
        server.stop()


def test_child_pids_agrees_with_a_walk_of_proc() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        listed = processes.child_pids(os.getpid())
        assert child.pid in listed
        assert sorted(listed) == sorted(processes._walk_for_children(os.getpid()))
    finally:
        child.kill()
        child.wait()
