"""``shopctl``: run and inspect the shop from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shopctl import demo
from shopctl.launcher import Launcher, LauncherSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shopctl", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser(
        "up", help="run Redis, the API, the workers and the projector in this terminal",
        description="Every option also reads from the environment variable in capitals "
        "(REDIS_PORT, API_PORT, DATA_DIR, REDIS_URL, ...); options win.",
    )
    up.add_argument("--redis-url", help="use this Redis instead of starting the embedded one")
    up.add_argument("--redis-port", type=int, help="port of the embedded Redis (6379)")
    up.add_argument("--api-port", type=int, help="port of the API (8000)")
    up.add_argument("--data-dir", type=Path, help="where the embedded Redis keeps data (.data)")
    up.add_argument("--payment-workers", type=int, help="payment worker processes (1)")
    up.add_argument("--inventory-workers", type=int, help="inventory worker processes (1)")
    up.add_argument("--no-demo", dest="demo_data", action="store_const", const=False,
                    help="do not load the demo catalog and customers")

    load = commands.add_parser(
        "demo", help="load the demo catalog and customers into a running API (idempotent)"
    )
    load.add_argument("--api-url", default="http://127.0.0.1:8000", help="where the API is")

    args = parser.parse_args(argv)
    if args.command == "demo":
        for line in demo.load(args.api_url.rstrip("/")):
            print(line)
        return 0
    if args.command == "up":
        given = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
        settings = LauncherSettings(**given)
        return Launcher(settings).run()
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
