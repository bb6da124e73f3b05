"""The local cluster the launcher runs (``shopctl up --cluster``), and reading
the streams across its masters (``shopctl events``)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx2
import pytest
import redis

from shop import topology
from shopctl.cli import main
from shopctl.cluster import LocalCluster, partition_slots, spread
from shopctl.redis_server import command, free_port, port_is_free, wait_until_ready
from tests import cluster as local
from tests.running import Running
from tests.shop import Shop


@pytest.mark.unit
@pytest.mark.parametrize(("partitions", "masters"), [(12, 3), (16, 3), (24, 6), (48, 12), (2, 3)])
def test_slots_are_cut_so_that_each_master_serves_as_many_partitions(
    partitions: int, masters: int
) -> None:
    ranges = spread(partitions, masters)
    assert ranges[0][0] == 0 and ranges[-1][1] == 16383
    assert all(a[1] + 1 == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    served = Counter(next(m for m, (first, last) in enumerate(ranges) if first <= slot <= last)
                     for slot in partition_slots(partitions))
    if partitions >= masters:
        assert len(served) == masters
        assert max(served.values()) - min(served.values()) <= 1, served


@pytest.mark.integration
def test_the_local_cluster_spreads_the_partitions_four_per_master(cluster: LocalCluster) -> None:
    with local.sync_client(cluster) as client:
        per_master = Counter(client.get_node_from_key(f"{{p{p}}}").port
                             for p in range(local.PARTITIONS))
    assert sorted(per_master.values()) == [4, 4, 4]
    assert sorted(per_master) == cluster.masters_now()


@pytest.mark.integration
def test_shopctl_events_reads_an_order_and_the_streams_across_masters(
    real_shop: Shop, capsys: pytest.CaptureFixture[str]
) -> None:
    real_shop.product("item1", stock=10)
    real_shop.customer("alice", 10_000)
    real_shop.customer("bob", 10_000)
    order = real_shop.order("alice", ("item1", 2))
    other = real_shop.order("bob", ("item1", 1))
    real_shop.settle()
    capsys.readouterr()
    assert main(["events", "--order", order, "--redis-url", real_shop.url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[3] for line in lines] == [
        "order.created", "payment.completed", "inventory.reserved"]
    assert all(f"order={order}" in line for line in lines)
    assert lines[0].split()[1] == real_shop.stream_of(topology.ORDERS_CREATED, order)

    assert main(["events", "--stream", "orders.created", "--redis-url", real_shop.url]) == 0
    created = capsys.readouterr().out.splitlines()
    assert {line.split()[4] for line in created} == {f"order={order}", f"order={other}"}
    ids = [tuple(map(int, line.split()[2].split("-"))) for line in created]
    assert ids == sorted(ids)  # oldest first, across partitions
    assert main(["events", "--limit", "2", "--redis-url", real_shop.url]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["events", "--order", "ord_0000000000000000", "--redis-url",
                 real_shop.url]) == 1


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_shopctl_up_cluster_starts_stops_cleanly_and_keeps_its_data(tmp_path: Path) -> None:
    base, api_port = local.free_base(), free_port()
    options = ("--cluster", "--cluster-port", str(base), "--cluster-node-timeout-ms", "1000")
    first = Running(tmp_path, free_port(), api_port, *options)
    try:
        first.wait_for("ready: API on", timeout_s=90)
        assert any("12 partitions" in line for line in first.lines)
        with httpx2.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as http:
            placed = http.post("/orders", headers=first.auth("alice"),
                               json={"lines": [{"product_id": "item1", "quantity": 1}]})
            assert placed.status_code == 202, placed.text
            order = placed.json()["id"]
    finally:
        assert first.stop() == 0, "\n".join(first.lines[-30:])
    # Every node stopped with it: its ports are free again.
    assert all(port_is_free(p) for p in range(base, base + 6))
    second = Running(tmp_path, free_port(), api_port, *options)
    try:
        second.wait_for("ready: API on", timeout_s=90)
        assert not any("forming a new cluster" in line for line in second.lines)
        with httpx2.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as http:
            kept = http.get(f"/orders/{order}", headers=second.auth("alice"))
            assert kept.status_code == 200 and kept.json()["status"] == "completed", kept.text
    finally:
        assert second.stop() == 0
    log = "\n".join(first.lines + second.lines)
    assert "Traceback" not in log, log[-3000:]


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_a_taken_cluster_port_is_a_clear_error_naming_the_setting(tmp_path: Path) -> None:
    base = local.free_base()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 4))
        taken.listen()
        done = subprocess.run(
            [sys.executable, "-m", "shopctl", "up", "--cluster", "--cluster-port", str(base),
             "--data-dir", str(tmp_path), "--api-port", str(free_port())],
            capture_output=True, text=True, timeout=50)
    assert done.returncode == 1
    assert f"port {base + 4} is already in use" in done.stdout
    assert "REDIS_CLUSTER_PORT (--cluster-port)" in done.stdout


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_shopctl_cluster_form_forms_bare_nodes_with_a_password_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What compose's cluster-init runs: six bare nodes with a password become
    a cluster whose partitions spread evenly; run again, it changes nothing."""
    base, password = local.free_base(), "s3cret-pw"
    nodes = [
        subprocess.Popen([*command(port, tmp_path / str(port), aof=False,
                                   cluster_node_timeout_ms=1000),
                          "--requirepass", password, "--masterauth", password],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for port in range(base, base + 6) if (tmp_path / str(port)).mkdir() or True
    ]
    try:
        for port in range(base, base + 6):
            wait_until_ready(f"redis://:{password}@127.0.0.1:{port}/0")
        monkeypatch.setenv("REDIS_PASSWORD", password)
        addresses = [f"localhost:{p}" for p in range(base, base + 6)]
        assert main(["cluster", "form", *addresses, "--partitions", "12"]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "formed; cluster_state:ok"
        assert main(["cluster", "form", *addresses, "--partitions", "12"]) == 0
        assert capsys.readouterr().out.splitlines() == ["already formed; cluster_state:ok"]
        with redis.RedisCluster(host="127.0.0.1", port=base, password=password) as client:
            per_master = Counter(client.get_node_from_key(f"{{p{p}}}").port for p in range(12))
        assert sorted(per_master.values()) == [4, 4, 4]
        monkeypatch.delenv("REDIS_PASSWORD")
        assert main(["cluster", "form", *addresses]) == 1  # without the password: says why
    finally:
        for node in nodes:
            node.terminate()
            node.wait(10)


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_shopctl_up_runs_on_your_own_cluster(cluster: LocalCluster, tmp_path: Path) -> None:
    local.flush(cluster)
    api_port = free_port()
    shop = Running(tmp_path, free_port(), api_port, env={"REDIS_CLUSTER_URL": cluster.url})
    try:
        shop.wait_for("ready: API on", timeout_s=90)
        assert any(f"using your Redis Cluster at {cluster.url}" in line for line in shop.lines)
        assert any("(12 partitions)" in line for line in shop.lines)  # 4 per master it found
        with httpx2.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as http:
            placed = http.post("/orders", headers=shop.auth("alice"),
                               json={"lines": [{"product_id": "item1", "quantity": 1}]})
            assert placed.status_code == 202, placed.text
            order = f"/orders/{placed.json()['id']}"
            deadline = time.monotonic() + 30
            while http.get(order, headers=shop.auth("alice")).json()["status"] != "completed":
                assert time.monotonic() < deadline, "the order did not complete"
                time.sleep(0.1)
    finally:
        code = shop.stop()
    assert code == 0, "\n".join(shop.lines[-30:])
    assert "Traceback" not in "\n".join(shop.lines)
