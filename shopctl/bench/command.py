"""``shopctl bench``: its options, and running it (``shopctl.bench.run``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any


def add_parser(commands: Any) -> None:
    """The ``bench`` subcommand and its options."""
    bench = commands.add_parser(
        "bench", help="benchmark the saga against a bare intake endpoint; JSON and a chart",
        description="Starts the real system on free ports with a throwaway data folder (or "
        "targets a running one with --api-url), then measures the load generator's ceiling, "
        "the bare intake baseline, saturation, a steady open-loop rate, and the consumer "
        "runner alone. Prints a table; writes JSON and a PNG chart to --out.",
    )
    bench.add_argument("--orders", type=int, default=20_000,
                       help="orders per baseline and saturation run (20000)")
    bench.add_argument("--concurrency", type=int, default=64, help="connections (64)")
    bench.add_argument("--rate", type=float,
                       help="steady orders/s (default: half the saturation settled/s)")
    bench.add_argument("--duration", type=float, default=15.0, help="steady seconds (15)")
    bench.add_argument("--runner-events", type=int, default=20_000,
                       help="events for the runner microbenchmark (20000)")
    bench.add_argument("--scarce", action="store_true",
                       help="stock for half the demand: the rest is refunded")
    bench.add_argument("--api-url", help="a running system's API instead of a throwaway one")
    bench.add_argument("--redis-url", help="with --api-url: its Redis (redis://127.0.0.1:6379/0)")
    bench.add_argument("--token", default=os.environ.get("SHOP_TOKEN"),
                       help="with --api-url: an operator token (SHOP_TOKEN; default: "
                       ".data/tokens/operator)")
    bench.add_argument("--partitions", type=partition_counts, default=[1, 4, 16],
                       metavar="N,N,...", help="saturation and steady on a system of each "
                       "partition count (1,4,16), and the last again with two replicas of "
                       "each worker; the first is the system of every phase")
    bench.add_argument("--cluster", action="store_true",
                       help="instead: saturation and steady on a local Redis Cluster (3 masters, "
                       "3 replicas) beside one server, 12 partitions each; where the work goes, "
                       "node by node (shopctl/bench/cluster.py)")
    bench.add_argument("--rounds", type=int, default=2,
                       help="--cluster: how many times the two systems take turns (2)")
    bench.add_argument("--no-compare-auth", dest="compare_auth", action="store_false",
                       help="skip the second system without authentication (what tokens cost)")
    bench.add_argument("--no-compare-telemetry", dest="compare_telemetry", action="store_false",
                       help="skip the systems with metrics off, and with tracing on (to a "
                       "local OTLP sink): what metrics and traces cost")
    bench.add_argument("--out", type=Path, default=Path("bench-results"),
                       help="where to write JSON and the chart (bench-results/)")
    bench.add_argument("--log-level", default="WARNING",
                       help="LOG_LEVEL of the system's processes (WARNING: no line per event)")
    bench.add_argument("--abuse", action="store_true",
                       help="instead: slow connections, huge uploads and a flood past the "
                       "open-file limit against a normal client (shopctl/bench/abuse.py)")
    bench.add_argument("--abuse-slow", type=int, default=1000,
                       help="--abuse: slow connections under the limits (1000)")
    bench.add_argument("--abuse-uploads", type=int, default=3,
                       help="--abuse: uploads of each framing, declared and chunked (3)")
    bench.add_argument("--abuse-upload-mb", type=int, default=500, help="--abuse: MB each (500)")
    bench.add_argument("--abuse-flood", type=int, default=20_000,
                       help="--abuse: slow connections in the flood (20000, at most the "
                       "open-file limit)")
    bench.add_argument("--gateway", action="store_true",
                       help="instead: the gateway's cost and throughput: a legacy order through "
                       "the proxy against the same order direct, deliveries per second to a "
                       "local receiver, and a restart (shopctl/bench/gateway.py)")
    bench.add_argument("--gateway-orders", type=int, default=150,
                       help="--gateway: legacy orders each way (150)")
    bench.add_argument("--gateway-messages", type=int, default=3000,
                       help="--gateway: stored messages to deliver (3000)")
    bench.add_argument("launcher_args", nargs="*", metavar="-- UP-OPTION",
                       help="after --: options for the system, e.g. -- --payment-workers 2")


def partition_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not counts or not all(1 <= n <= 1024 for n in counts):
        raise argparse.ArgumentTypeError("each partition count is 1 to 1024")
    return counts


def run(args: argparse.Namespace) -> int:
    from shopctl.bench import report
    from shopctl.bench.harness import Options
    from shopctl.bench.run import Bench

    options = Options(
        orders=args.orders, concurrency=args.concurrency, rate=args.rate,
        duration_s=args.duration, api_url=args.api_url, redis_url=args.redis_url,
        out=args.out, runner_events=args.runner_events, scarce=args.scarce,
        log_level=args.log_level, launcher_args=args.launcher_args, partitions=args.partitions,
        compare_auth=args.compare_auth, compare_telemetry=args.compare_telemetry,
        token=args.token, abuse=args.abuse, cluster=args.cluster,
        rounds=args.rounds,
        abuse_slow=args.abuse_slow, abuse_uploads=args.abuse_uploads,
        abuse_upload_mb=args.abuse_upload_mb, abuse_flood=args.abuse_flood,
        abuse_header_timeout_s=float(os.environ.get("API_HEADER_TIMEOUT_S", "10")),
    )
    bench = Bench(options, print)
    if args.gateway:
        from shopctl.bench import gateway

        measured = asyncio.run(gateway.measure(args.out, print, args.gateway_orders,
                                               args.gateway_messages))
        print()
        print(gateway.table(measured))
        print(f"wrote {args.out / 'gateway.json'}")
        return 0
    if args.abuse:
        from shopctl.bench import abuse

        try:
            import uvloop

            found = uvloop.run(abuse.against(bench))
        except ImportError:
            found = asyncio.run(abuse.against(bench))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "abuse.json").write_text(json.dumps(found, indent=2) + "\n")
        print(f"wrote {args.out / 'abuse.json'}")
        return 0
    try:
        import uvloop

        results = uvloop.run(bench.run())
    except ImportError:
        results = asyncio.run(bench.run())
    print()
    if args.cluster:
        from shopctl.bench import cluster

        print(cluster.table(results))
    else:
        print(report.table(results))
    for path in report.save(results, bench.series, args.out):
        print(f"wrote {path}")
    return 0
