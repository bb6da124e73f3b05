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
from shopctl.redis_server import AOF_REWRITE_RETRY_S, BACKGROUND_NICE, RedisServer, free_port
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


def at_lowest_priority(pid: int) -> bool:
    if hasattr(os, "SCHED_IDLE"):
        return os.sched_getscheduler(pid) == os.SCHED_IDLE
    return os.getpriority(os.PRIO_PROCESS, pid) == BACKGROUND_NICE


def persistence(client: redis.Redis) -> dict:
    return client.info("persistence")


def test_an_aof_rewrite_runs_at_the_lowest_cpu_priority(tmp_path: Path) -> None:
    server = RedisServer(free_port(), tmp_path, stdout=subprocess.DEVNULL).start()
    client = redis.Redis.from_url(server.url)
    try:
        client.mset({f"k{i}": i for i in range(30)})
        client.config_set("rdb-key-save-delay", 100_000)  # 0.1 s a key: a rewrite we can see
        client.bgrewriteaof()  # somebody else's: the next call lowers it
        deadline, lowered = time.monotonic() + 5, []
        while not lowered and time.monotonic() < deadline:
            lowered = server.maintain()
            time.sleep(0.02)
        assert len(lowered) == 1, "no rewrite child seen"
        assert at_lowest_priority(lowered[0])
        assert server.maintain() == []  # once is enough
        assert server.proc is not None  # Redis itself keeps this process's priority
        assert not at_lowest_priority(server.proc.pid)
        assert os.getpriority(os.PRIO_PROCESS, server.proc.pid) == os.getpriority(
            os.PRIO_PROCESS, 0
        )
    finally:
        client.config_set("rdb-key-save-delay", 0)
        client.close()
        server.stop()


def test_maintain_rewrites_the_aof_once_it_doubled_and_lowers_the_child_at_once(
    tmp_path: Path,
) -> None:
    server = RedisServer(
        free_port(), tmp_path, aof_rewrite_min_bytes=64 * 1024, stdout=subprocess.DEVNULL
    ).start()
    client = redis.Redis.from_url(server.url)
    try:
        # Redis never rewrites by itself: maintain decides.
        assert client.config_get("auto-aof-rewrite-percentage") == {
            "auto-aof-rewrite-percentage": "0"
        }
        client.set("small", "x")
        assert server.maintain() == [] and persistence(client)["aof_rewrites"] == 0  # < 64 KB
        client.mset({f"k{i}": "v" * 10_000 for i in range(10)})  # ~100 KB of AOF
        client.config_set("rdb-key-save-delay", 100_000)  # ~1 s: a rewrite we can see
        lowered = server.maintain()
        assert len(lowered) == 1, "the rewrite's child was not lowered by the call that asked"
        assert at_lowest_priority(lowered[0])
        assert persistence(client)["aof_rewrite_in_progress"] == 1
        assert server.maintain() == []  # running: not a second one
        wait_until(lambda: persistence(client)["aof_rewrite_in_progress"] == 0)
        done = persistence(client)
        assert done["aof_rewrites"] == 1 and done["aof_last_bgrewrite_status"] == "ok"
        assert done["aof_current_size"] < 2 * done["aof_base_size"]
        assert server.maintain() == []  # not due again until the file doubles
        assert persistence(client)["aof_rewrites"] == 1
    finally:
        client.config_set("rdb-key-save-delay", 0)
        client.close()
        server.stop()


@pytest.mark.unit
def test_a_failed_rewrite_is_tried_again_a_minute_later(tmp_path: Path) -> None:
    server = RedisServer(free_port(), tmp_path, aof_rewrite_min_bytes=1000)
    due = {"aof_current_size": 5000, "aof_base_size": 2000, "aof_last_bgrewrite_status": "ok"}
    assert server._aof_rewrite_due(due)
    assert not server._aof_rewrite_due(due | {"aof_current_size": 3999})  # not doubled
    assert not server._aof_rewrite_due(due | {"aof_base_size": 0, "aof_current_size": 999})
    assert not server._aof_rewrite_due(due | {"aof_rewrite_in_progress": 1})
    assert not server._aof_rewrite_due(due | {"loading": 1})
    failed = due | {"aof_last_bgrewrite_status": "err"}
    assert server._aof_rewrite_due(failed)  # none tried yet by this owner
    server._last_rewrite_at = time.monotonic()
    assert not server._aof_rewrite_due(failed)
    assert server._aof_rewrite_due(due)  # it succeeded meanwhile (someone else's)
    server._last_rewrite_at -= AOF_REWRITE_RETRY_S
    assert server._aof_rewrite_due(failed)


def test_child_pids_agrees_with_a_walk_of_proc() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        listed = processes.child_pids(os.getpid())
        assert child.pid in listed
        assert sorted(listed) == sorted(processes._walk_for_children(os.getpid()))
    finally:
        child.kill()
        child.wait()
