"""The benchmark command works end to end, on a tiny size. It asserts what
the benchmark reports, never how fast anything was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


def test_the_benchmark_runs_every_phase_and_writes_json_and_a_chart(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shopctl", "bench", "--orders", "150", "--concurrency", "8",
         "--rate", "40", "--duration", "1", "--runner-events", "300", "--partitions", "1,4",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=290,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for phase in ("loadgen", "baseline", "saturation", "steady", "runner"):
        assert any(line.startswith(phase) for line in result.stdout.splitlines()), phase
    assert "settled/s ÷ baseline accepted/s = " in result.stdout
    results = json.loads((tmp_path / "latest.json").read_text())
    assert results["saturation"]["orders"] == 150 and results["steady"]["orders"] == 40
    for phase in ("saturation", "steady"):
        assert set(results[phase]["post_to_final_ms"]) == {"p50", "p95", "p99", "max"}
    assert results["ratio_settled_to_baseline"] > 0
    assert {"api", "redis", "projector", "payment-1", "inventory-1"} <= set(
        results["peak_rss_mb"])
    assert results["runner"]["payment_per_s"] > 0 and results["redis_bytes_per_order"] > 0
    assert (tmp_path / "latest.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The benchmark authenticates like a client, and measures the same phases without.
    assert results["without_auth"]["saturation"]["orders"] == 150
    assert results["without_auth"]["steady"]["orders"] == 40
    assert "saturation settled/s: " in result.stdout and " without (with ÷ without = " in \
        result.stdout
    # The same phases at 4 partitions, and with two replicas of each worker.
    assert list(results["partitions"]) == [
        "1 partition(s)", "4 partition(s)", "4 partition(s), 2 replicas of each worker"]
    for phases in results["partitions"].values():
        assert phases["saturation"]["orders"] == 150 and phases["steady"]["orders"] == 40
    assert "partitions on one server, same run" in result.stdout
    # What metrics and traces cost: the same phases with metrics off, and with spans
    # exported to a local OTLP sink (which got them).
    telemetry = results["telemetry"]
    assert list(telemetry) == ["metrics off", "metrics on, tracing off (the default)",
                               "metrics and tracing on", "tracing on, 1 trace in 10 sampled"]
    for phases in telemetry.values():
        assert phases["saturation"]["orders"] == 150 and phases["steady"]["orders"] == 40
    assert telemetry["metrics and tracing on"]["otlp_exports"]["requests"] > 0
    assert "otlp_exports" not in telemetry["metrics off"]
    assert "metrics and traces, fresh systems" in result.stdout


def test_the_cluster_benchmark_compares_a_cluster_with_one_server(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shopctl", "bench", "--cluster", "--rounds", "1", "--orders", "150",
         "--concurrency", "8", "--rate", "40", "--duration", "1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=170,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((tmp_path / "latest.json").read_text())["cluster"]["summary"]
    assert set(summary["settled_per_s"]) == {"one server", "cluster"}
    assert all(n > 0 for n in summary["settled_per_s"].values())
    # Where the work goes: each of the three masters and three replicas, per order.
    redis_cpu = summary["redis_cpu_ms_per_order"]
    assert sorted(redis_cpu["masters"]) == ["master-1", "master-2", "master-3"]
    assert sorted(redis_cpu["replicas"]) == ["replica-1", "replica-2", "replica-3"]
    assert all(ms > 0 for ms in redis_cpu["masters"].values())
    assert len(summary["commands_per_order"]["masters"]) == 3
    assert summary["python_ratio"] > 0
    assert set(summary["projection"]) == {"evenness", "3 masters", "6 masters", "12 masters"}
    assert "cluster ÷ one server = " in result.stdout and "projection" in result.stdout


def test_the_gateway_benchmark_prints_its_numbers(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shopctl", "bench", "--gateway", "--gateway-orders", "6",
         "--gateway-messages", "200", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=170,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads((tmp_path / "gateway.json").read_text())
    assert found["legacy_order_ms"]["proxied"]["n"] == 6
    assert found["legacy_order_ms"]["read_proxied"]["n"] == 12
    assert found["deliveries_1p"]["messages"] == found["deliveries_4p"]["messages"] == 200
    assert found["restart_s"] > 0
    assert "added by the proxy per request" in result.stdout
