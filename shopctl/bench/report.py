"""The benchmark's results: a table for the terminal, JSON, and a PNG chart
of the latency distribution per phase."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


def table(results: dict[str, Any]) -> str:
    rows = [("phase", "orders/s", "POST p50/p95/p99/max ms", "POST→final p50/p95/p99/max ms")]

    def four(p: dict[str, float] | None) -> str:
        return " / ".join(f"{p[k]:g}" for k in ("p50", "p95", "p99", "max")) if p else "-"

    lg, base = results["loadgen"], results["baseline"]
    sat, steady = results["saturation"], results["steady"]
    rows += [
        ("load generator vs no-op", f"{lg['requests_per_s']}", four(lg["latency_ms"]), "-"),
        ("baseline (validate + XADD)", f"{base['accepted_per_s']} accepted",
         four(base["post_ms"]), "-"),
        ("saturation", f"{sat['accepted_per_s']} accepted, {sat['settled_per_s']} settled",
         four(sat["post_ms"]), four(sat["post_to_final_ms"])),
        (f"steady, {steady['rate_per_s']:g}/s for {steady['duration_s']:g}s",
         f"{steady['orders']} orders", four(steady["post_ms"]),
         four(steady["post_to_final_ms"])),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    runner = results["runner"]
    rss = ", ".join(f"{name} {mb:g}" for name, mb in results.get("peak_rss_mb", {}).items())
    lines += [
        "",
        f"settled/s ÷ baseline accepted/s = {results['ratio_settled_to_baseline']}",
        f"runner, one process: no-op {runner['noop_per_s']} events/s, payment handler "
        f"{runner['payment_per_s']} events/s ({runner['payment_logged_per_s']} with a log "
        "line per event)",
        f"Redis memory per settled order: {results['redis_bytes_per_order']} bytes",
        f"peak RSS (MB): {rss}",
        "Redis calls per order at saturation: " + ", ".join(
            f"{name} {n:g}" for name, n in sat.get("redis_calls_per_order", {}).items()),
        "CPU ms per order at saturation: " + ", ".join(
            f"{name} {ms:g}" for name, ms in sat.get("cpu_ms_per_order", {}).items()),
        "worst lag + pending per group (saturation): " + (", ".join(
            f"{g} {n}" for g, n in sorted(sat["max_lag"].items()) if n) or "none"),
        "steady: the load generator sent each order late by p50/p95/p99/max "
        f"{four(steady.get('sender_late_ms'))} ms (its own wait for a core, part of the "
        "latencies above)",
        f"AOF rewrites by Redis (a fork that writes the whole dataset to disk): saturation "
        f"{sat.get('aof_rewrites', 0)}, steady {steady.get('aof_rewrites', 0)}",
    ]
    if off := results.get("without_auth"):
        lines += ["", "authentication (each request's token checked in Redis) vs none, same run:"]
        pairs = [
            ("saturation settled/s", sat["settled_per_s"], off["saturation"]["settled_per_s"]),
            ("steady POST→final p99 ms", steady["post_to_final_ms"].get("p99"),
             off["steady"]["post_to_final_ms"].get("p99")),
            ("API CPU ms per order", sat.get("cpu_ms_per_order", {}).get("api"),
             off["saturation"].get("cpu_ms_per_order", {}).get("api")),
            ("Redis CPU ms per order", sat.get("cpu_ms_per_order", {}).get("redis"),
             off["saturation"].get("cpu_ms_per_order", {}).get("redis")),
        ]
        for label, on, without in pairs:
            ratio = f" (with ÷ without = {on / without:.2f})" if on and without else ""
            lines.append(f"  {label}: {on} with, {without} without{ratio}")
    if telemetry := results.get("telemetry"):
        lines += ["", "metrics and traces, fresh systems one after the other, same run "
                  "(steady at the first system's rate; ratios to the default):"]
        default = telemetry["metrics on, tracing off (the default)"]["saturation"][
            "settled_per_s"]
        compared: list[tuple[str, ...]] = [
            ("system", "settled/s", "steady POST→final p50/p99 ms", "CPU ms/order: API, workers")]
        for label, phases in telemetry.items():
            s, final, cpu = _system(phases)
            compared.append((label, f"{s['settled_per_s']} ({s['settled_per_s'] / default:.2f})",
                             final, f"{cpu.get('api')}, {_workers_ms(cpu):.3f}"))
        lines += _columns(compared)
        for label, phases in telemetry.items():
            if exports := phases.get("otlp_exports"):
                lines.append(f"  {label}: spans exported in {exports['requests']} OTLP/HTTP "
                             f"requests, {exports['mb']} MB")
    if sweep := results.get("partitions"):
        lines += ["", "partitions on one server, same run (steady at the first system's rate):"]
        sweep_rows: list[tuple[str, ...]] = [
            ("system", "settled/s", "steady POST→final p50/p99 ms", "Redis calls/order",
             "CPU ms/order: API, workers, Redis")]
        for label, phases in sweep.items():
            s, final, cpu = _system(phases)
            sweep_rows.append((
                label, f"{s['settled_per_s']}", final,
                f"{sum(s.get('redis_calls_per_order', {}).values()):.2f}",
                f"{cpu.get('api')}, {_workers_ms(cpu):.3f}, {cpu.get('redis')}"))
        lines += _columns(sweep_rows)
    return "\n".join(lines)


def _system(phases: dict[str, Any]) -> tuple[dict[str, Any], str, dict[str, float]]:
    """A compared system's saturation, its steady POST→final p50 / p99, its CPU per order."""
    final = phases["steady"]["post_to_final_ms"]
    saturation = phases["saturation"]
    return (saturation, f"{final.get('p50')} / {final.get('p99')}",
            saturation.get("cpu_ms_per_order", {}))


def _workers_ms(cpu: dict[str, float]) -> float:
    """The workers' CPU per order, every replica's together."""
    return sum(ms for name, ms in cpu.items()
               if name.startswith(("payment", "inventory", "projector")))


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as indented, aligned columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def save(results: dict[str, Any], series: dict[str, list[float]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    written = []
    for name in (f"bench-{stamp}.json", "latest.json"):
        path = out / name
        path.write_text(json.dumps(results, indent=2) + "\n")
        written.append(path)
    if "baseline" in results:  # the chart's title is about the bare intake
        written.append(chart(series, results, out / "latest.png"))
    return written


def chart(series: dict[str, list[float]], results: dict[str, Any], path: Path) -> Path:
    """Latency distribution per phase: the share of orders at or under each
    latency, on a log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5), dpi=110)
    styles = {"POST": "--", "POST to final": "-"}
    for label, values in series.items():
        if not values:
            continue
        ordered = sorted(max(v, 0.01) for v in values)
        share = [100 * (i + 1) / len(ordered) for i in range(len(ordered))]
        kind = label.split(": ", 1)[1]
        axes.plot(ordered, share, styles[kind], label=label, linewidth=1.6)
    axes.set_xscale("log")
    axes.set_xlabel("latency (ms, log scale)")
    axes.set_ylabel("orders at or under it (%)")
    axes.axhline(99, color="grey", linewidth=0.6, linestyle=":")
    axes.grid(True, which="both", alpha=0.3)
    sat = results["saturation"]
    axes.set_title(
        f"Saga latency: {sat['settled_per_s']} settled/s at saturation, "
        f"{results['ratio_settled_to_baseline']} × the bare intake "
        f"({results['baseline']['accepted_per_s']}/s)", fontsize=10)
    axes.legend(fontsize=8, loc="lower right")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
