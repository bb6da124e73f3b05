"""``shopctl``: run and inspect the shop from the command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import redis.exceptions

from access import tokens
from shop.topology import SHOP, with_gateway_stores
from shopctl import demo
from shopctl.bench import command as bench_command
from shopctl.launcher import Launcher
from shopctl.settings import LauncherSettings
from streams import deadletter
from streams.connection import connect_async, detect_cluster
from streams.settings import Settings
from streams.topology import stored_topology


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
    up.add_argument("--partitions", type=int,
                    help="partitions of each stream (1; 4 per master on a cluster); fixed for "
                    "the life of the data folder")
    up.add_argument("--cluster", action="store_const", const=True,
                    help="run on a local Redis Cluster (3 masters, 3 replicas on ports "
                    "7000-7005; data in DATA_DIR/cluster) instead of one Redis")
    up.add_argument("--cluster-port", dest="redis_cluster_port", type=int,
                    help="first port of the local cluster's nodes (7000)")
    up.add_argument("--cluster-masters", type=int, help="masters of the local cluster (3)")
    up.add_argument("--cluster-replicas", type=int, help="replicas of each master (1)")
    up.add_argument("--cluster-node-timeout-ms", type=int,
                    help="how long a silent node waits before its replica takes over (3000)")
    up.add_argument("--redis-cluster-url",
                    help="use this Redis Cluster (any node's URL) instead of a local one")
    up.add_argument("--payment-workers", type=int, help="payment worker processes (1)")
    up.add_argument("--inventory-workers", type=int, help="inventory worker processes (1)")
    up.add_argument("--projectors", type=int, help="order status projector processes (1)")
    up.add_argument("--redis-appendfsync", choices=("everysec", "always"),
                    help="AOF fsync of the embedded Redis (everysec; always: survives power loss)")
    up.add_argument("--gateway", metavar="FILE",
                    help="also run a mediation gateway with this configuration (a file, or "
                    "legacy-flask.yaml or webhooks.yaml, bundled); see docs/mediation.md")
    up.add_argument("--no-demo", dest="demo_data", action="store_const", const=False,
                    help="do not load the demo catalog and customers")
    up.add_argument("--no-auth", dest="api_auth", action="store_const", const=False,
                    help="no tokens needed: anyone who reaches the API may do anything "
                    "(loopback only)")

    load = commands.add_parser(
        "demo", help="load the demo catalog and customers into a running API (idempotent)"
    )
    load.add_argument("--api-url", default="http://127.0.0.1:8000", help="where the API is")
    load.add_argument("--token", default=os.environ.get("SHOP_TOKEN"),
                      help="an operator token (SHOP_TOKEN); without one, the demo tokens are "
                      "made (or kept) in DATA_DIR/tokens through --redis-url")
    load.add_argument("--redis-url", help="where Redis is (REDIS_URL)")
    load.add_argument("--data-dir", type=Path, default=Path(os.environ.get("DATA_DIR", ".data")),
                      help="where the demo tokens are kept (DATA_DIR, .data)")

    token = commands.add_parser(
        "token", help="create, list or revoke API tokens",
        description="Tokens are stored hashed in Redis: `create` prints a new token once, on "
        "its own line on stdout; keep it. An operator token edits the catalog and runs "
        "/ops; a customer token places and reads that customer's orders.",
    )
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--redis-url", help="where Redis is (REDIS_URL, redis://127.0.0.1:6379/0)")
    token_actions = token.add_subparsers(dest="action", required=True)
    make = token_actions.add_parser("create", help="create a token; prints it", parents=[where])
    who = make.add_mutually_exclusive_group(required=True)
    who.add_argument("--role", choices=("operator",), help="an operator token")
    who.add_argument("--customer", metavar="ID", help="a token that acts as this customer")
    make.add_argument("--name", help="a unique name for list and revoke (default: generated)")
    make.add_argument("--ttl", help="expires after this long: 30d, 12h, 90m, 45s (default: never)")
    token_actions.add_parser("list", help="every live token (never the secret)", parents=[where])
    drop = token_actions.add_parser("revoke", help="revoke a token by name, at once",
                                    parents=[where])
    drop.add_argument("name")

    dead = commands.add_parser(
        "dead", help="list, replay or purge dead letters",
        description="A dead letter is a message no handler could handle, kept in "
        "<stream>.dead with the reason. Replay puts the original back on its stream "
        "(handlers are idempotent, so only what did not happen happens; a gateway's "
        "parked delivery is sent again with its idempotency key); purge deletes.",
    )
    dead.add_argument("action", choices=("list", "replay", "purge"))
    dead.add_argument("refs", nargs="*", metavar="REF",
                      help="dead letters as `list` names them: orders.created.dead/1763...-0")
    dead.add_argument("--all", action="store_true", help="every dead letter (of --stream)")
    dead.add_argument("--stream", help="only this stream's dead letters (orders.created, ..., or a "
                      "gateway's store: gateway.webhooks)")
    dead.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    dead.add_argument("--redis-url", help="where Redis is (REDIS_URL, redis://127.0.0.1:6379/0)")

    form = commands.add_parser(
        "cluster", help="form a Redis Cluster of new nodes, partitions spread over the masters",
        description="Like `redis-cli --cluster create`, but the slots are cut so that each "
        "master serves as many of the shop's partitions (hash tags {p0}, {p1}, ...) as "
        "another. Nodes already formed into this cluster are left as they are. The password, "
        "if any, is read from REDIS_PASSWORD.",
    )
    form.add_argument("action", choices=("form",))
    form.add_argument("nodes", nargs="+", metavar="HOST:PORT",
                      help="the nodes, masters first, then their replicas in turn")
    form.add_argument("--masters", type=int, default=3, help="how many masters (3)")
    form.add_argument("--partitions", type=int, help="the shop's PARTITIONS (4 per master)")

    events = commands.add_parser(
        "events", help="the streams as readable lines, oldest first, across every partition",
        description="Reads the streams wherever they are (every partition; on a cluster, "
        "every master): when, stream, entry id, type, order, data. With --order, one order's "
        "events, found by id through its history. Colored on a terminal (NO_COLOR: not).",
    )
    events.add_argument("--order", metavar="ID", help="one order's events")
    events.add_argument("--stream", help="one stream, of every partition (orders.created) or "
                        "of one (orders.created{p3}); add .dead for its dead letters")
    events.add_argument("--limit", type=int, default=50,
                        help="the newest this many (50; 0 with --follow: only new ones)")
    events.add_argument("--follow", "-f", action="store_true",
                        help="then new entries as they are added, until Ctrl-C")
    events.add_argument("--json", action="store_true", help="one JSON object a line")
    events.add_argument("--redis-url", help="where Redis is: the server, or any node of a "
                        "cluster (REDIS_CLUSTER_URL, REDIS_URL)")

    lag = commands.add_parser(
        "lag", help="each consumer group's lag and pending, by stream and partition",
        description="Lag: entries of a stream a group has not read yet. Pending: read and "
        "not acknowledged (a worker is on them, or died holding them). Both near 0 when "
        "the workers keep up.",
    )
    lag.add_argument("--json", action="store_true", help="one JSON object a line")
    lag.add_argument("--redis-url", help="where Redis is (REDIS_CLUSTER_URL, REDIS_URL)")

    order = commands.add_parser(
        "order", help="place an order, or watch one to its final status, through the API",
        description="No JSON to quote: the same words in bash and PowerShell. The token is "
        "--token, else SHOP_TOKEN, else the demo token kept in DATA_DIR/tokens.",
    )
    order_actions = order.add_subparsers(dest="action", required=True)
    through = argparse.ArgumentParser(add_help=False)
    through.add_argument("--api-url", default=os.environ.get("SHOP_API_URL",
                                                             "http://127.0.0.1:8000"),
                         help="where the API is (SHOP_API_URL, http://127.0.0.1:8000)")
    through.add_argument("--token", default=os.environ.get("SHOP_TOKEN"),
                         help="a bearer token (SHOP_TOKEN)")
    through.add_argument("--data-dir", type=Path,
                         default=Path(os.environ.get("DATA_DIR", ".data")),
                         help="where `shopctl up` keeps the demo tokens (DATA_DIR, .data)")
    placing = order_actions.add_parser(
        "place", parents=[through], help="place an order; prints its id",
        description="Prints the new order's id alone on stdout, what it says of it on stderr.")
    placing.add_argument("--customer", required=True, metavar="ID",
                         help="whose order (their token: DATA_DIR/tokens/ID unless --token)")
    placing.add_argument("lines", nargs="+", metavar="PRODUCT=QUANTITY",
                         help="what to order: item1=2 item2=1")
    placing.add_argument("--idempotency-key", metavar="KEY",
                         help="send again with the same key: the same order, not a second")
    placing.add_argument("--watch", action="store_true", help="then watch it to the end")
    watching = order_actions.add_parser(
        "watch", parents=[through], help="say each event of an order until it is final",
        description="Exits 0 once the order's status is final (whichever), 1 if it is not "
        "within --timeout.")
    watching.add_argument("order_id", metavar="ID")
    watching.add_argument("--timeout", type=float, default=60.0,
                          help="give up after this many seconds (60)")

    play = commands.add_parser(
        "scenario", help="two scripted agents shop and keep stock through the MCP servers",
        description="Runs both MCP servers over stdio, as an agent host does, and plays an "
        "ops agent and a shopping agent against a running shop; prints the transcript.",
    )
    play.add_argument("--api-url", default="http://127.0.0.1:8000", help="where the API is")
    play.add_argument("--tokens", type=Path, default=Path(".data/tokens"),
                      help="a folder with the operator's, alice's and bob's tokens, one file "
                      "each, as `shopctl up` keeps them (.data/tokens)")

    bench_command.add_parser(commands)

    args = parser.parse_args(argv)
    try:
        return _run(parser, args)
    except redis.exceptions.ConnectionError as exc:
        print(f"shopctl {args.command}: Redis does not answer ({exc}); is the shop running? "
              "Say where it is with --redis-url or REDIS_URL", file=sys.stderr)
        return 1


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "bench":
        return bench_command.run(args)
    if args.command == "scenario":
        import anyio  # the MCP SDK loads in half a second: only for this command

        from mcp_servers import scenario

        try:
            found = {who: (args.tokens / who).read_text().strip()
                     for who in ("operator", "alice", "bob")}
        except OSError as exc:
            parser.error(f"scenario: no token file {exc.filename}: start the shop with "
                         "`make up` (it writes them) or give --tokens")
        outcome = anyio.run(scenario.play, args.api_url.rstrip("/"), print, found)
        print(f"\nalice: {', '.join(outcome.statuses['alice'])}; "
              f"bob: {', '.join(outcome.statuses['bob'])}; "
              f"item2 restocked to {outcome.restocked_to}; streams {outcome.health}")
        return 0 if outcome.ok else 1
    if args.command == "cluster":
        return _form(parser, args)
    if args.command == "events":
        try:
            return asyncio.run(_events(args))
        except ValueError as exc:
            parser.error(str(exc))
        except KeyboardInterrupt:
            return 0
    if args.command == "lag":
        return asyncio.run(_lag(args))
    if args.command == "order":
        return _order(args)
    if args.command == "dead":
        if args.action != "list" and bool(args.refs) == args.all:
            parser.error(f"dead {args.action}: name dead letters (REF ...) or give --all")
        try:
            return asyncio.run(_dead(args))
        except ValueError as exc:
            parser.error(str(exc))
    if args.command == "demo":
        if args.token:
            for line in demo.load(args.api_url.rstrip("/"), args.token):
                print(line)
            return 0
        data = Settings()
        url = args.redis_url or data.redis_target
        found = demo.seed(args.api_url.rstrip("/"), url, args.data_dir,
                          cluster=detect_cluster(url) if args.redis_url else data.cluster)
        print(f"demo tokens in {args.data_dir / 'tokens'}: {', '.join(found)}")
        return 0
    if args.command == "token":
        try:
            return asyncio.run(_token(args))
        except tokens.TokenError as exc:
            print(f"shopctl token {args.action}: {exc}", file=sys.stderr)
            return 2
    if args.command == "up":
        given = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
        return Launcher(LauncherSettings(**given)).run()
    parser.error(f"unknown command {args.command}")
    return 2


def _client(redis_url: str | None, max_connections: int = 4) -> Any:
    """A client of the data: ``--redis-url`` (a server, or any node of a cluster),
    else REDIS_CLUSTER_URL or REDIS_URL."""
    if redis_url:
        return connect_async(redis_url, cluster=detect_cluster(redis_url),
                             max_connections=max_connections)
    settings = Settings()
    return connect_async(settings.redis_target, cluster=settings.cluster,
                         max_connections=max_connections)


async def _token(args: argparse.Namespace) -> int:
    async with _client(args.redis_url, 2) as client:
        topology = await stored_topology(client, SHOP)
        if args.action == "create":
            ttl_s = tokens.parse_ttl(args.ttl) if args.ttl else None
            text, info = await tokens.create(
                client, topology, "customer" if args.customer else "operator", name=args.name,
                customer_id=args.customer, ttl_s=ttl_s)
            print(f"created token {info.name} ({info.role}"
                  + (f" for {info.customer_id}" if info.customer_id else "")
                  + (f", expires {info.expires_at}" if info.expires_at else "") + "):",
                  file=sys.stderr)
            print(text)
            return 0
        if args.action == "list":
            found = await tokens.list_tokens(client, topology)
            for t in found:
                print(f"{t.name:<24} {t.role:<9} {t.customer_id or '-':<16} created "
                      f"{t.created_at}  expires {t.expires_at or 'never'}")
            print(f"{len(found)} token(s)", file=sys.stderr)
            return 0
        if await tokens.revoke(client, topology, args.name):
            print(f"revoked {args.name}")
            return 0
        print(f"shopctl token revoke: no token named {args.name!r}", file=sys.stderr)
        return 1


def _form(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from shopctl import cluster

    try:
        addresses = [(host, int(port)) for host, _, port in
                     (node.rpartition(":") for node in args.nodes)]
    except ValueError:
        parser.error(f"cluster form: nodes are HOST:PORT, not {' '.join(args.nodes)}")
    if len(addresses) % args.masters:
        parser.error(f"cluster form: {len(addresses)} nodes cannot be {args.masters} masters "
                     "with as many replicas each")
    try:
        formed = cluster.form_if_new(addresses, args.masters,
                                     args.partitions or 4 * args.masters,
                                     os.environ.get("REDIS_PASSWORD") or None, print)
    except cluster.ClusterError as exc:
        print(f"shopctl cluster form: {exc}", file=sys.stderr)
        return 1
    print("formed; cluster_state:ok" if formed else "already formed; cluster_state:ok")
    return 0


async def _events(args: argparse.Namespace) -> int:
    from shopctl import events

    async with _client(args.redis_url) as client:
        topology = await with_gateway_stores(client, await stored_topology(client, SHOP),
                                             [args.stream] if args.stream else [])
        names = events.streams_of(topology, args.stream, args.order)
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR") and not args.json

        def show(record: events.Entry) -> None:
            print(events.as_json(record) if args.json else
                  events.line(record, topology.subject, color), flush=True)

        start = await events.newest_ids(client, names) if args.follow else {}
        if args.order:
            found = [r for r in await events.of_order(client, topology, args.order)
                     if r["stream"] in names]
            if not found and not args.follow:
                print(f"no order {args.order!r}", file=sys.stderr)
                return 1
        else:
            found = await events.newest(client, topology, names, args.limit)
        shown = {(r["stream"], r["entry_id"]) for r in found}
        for record in found:
            show(record)
        if args.follow:
            await events.follow(
                client, topology, names, start, show,
                keep=lambda r: (r["stream"], r["entry_id"]) not in shown
                and (not args.order or r[topology.subject] == args.order))
        return 0


async def _lag(args: argparse.Namespace) -> int:
    from order_api import ops

    async with _client(args.redis_url) as client:
        topology = await with_gateway_stores(client, await stored_topology(client, SHOP))
        health = await ops.streams(client, topology)
    rows = []
    for stream in health:
        base, tag = topology.split(stream.name)
        for group in stream.groups:
            rows.append({"stream": base, "partition": tag.strip("{}") or "-",
                         "group": group.name, "lag": group.lag, "pending": group.pending,
                         "consumers": group.consumers, "dead_letters": stream.dead_letters})
    if args.json:
        for row in rows:
            print(json.dumps(row, separators=(",", ":")))
        return 0
    print(f"{'STREAM':<24} {'PART':<5} {'GROUP':<22} {'LAG':>7} {'PENDING':>8} "
          f"{'CONSUMERS':>9} {'DEAD':>6}")
    for row in rows:
        lagging = "?" if row["lag"] is None else row["lag"]
        print(f"{row['stream']:<24} {row['partition']:<5} {row['group']:<22} {lagging:>7} "
              f"{row['pending']:>8} {row['consumers']:>9} {row['dead_letters']:>6}")
    behind = sum(1 for row in rows if row["lag"] or row["pending"])
    print(f"{len(rows)} group(s) on {len(health)} stream(s); {behind} with lag or pending "
          "(lag ? : unknown after a deletion in the stream)", file=sys.stderr)
    return 0


def _order(args: argparse.Namespace) -> int:
    from shopctl import orders

    api = args.api_url.rstrip("/")
    try:
        if args.action == "place":
            lines = orders.parse_lines(args.lines)
            token = orders.token_for(args.token, args.data_dir, args.customer)
            placed = orders.place(api, token, lines, args.idempotency_key)
            orders.err(orders.describe(placed))
            print(placed["id"], flush=True)
            if not args.watch:
                return 0
            order_id = placed["id"]
            token = orders.token_for(args.token, args.data_dir, args.customer)
            timeout = 60.0
        else:
            order_id, timeout = args.order_id, args.timeout
            token = orders.token_for(args.token, args.data_dir, "operator")
        orders.watch(api, token, order_id, orders.err if args.action == "place" else print,
                     timeout_s=timeout)
        return 0
    except orders.OrderError as exc:
        print(f"shopctl order {args.action}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _dead(args: argparse.Namespace) -> int:
    async with _client(args.redis_url) as client:
        topology = await with_gateway_stores(client, await stored_topology(client, SHOP),
                                             [*args.refs, *([args.stream] if args.stream else [])])
        if args.action == "list" or args.all:
            found = await deadletter.list_dead(client, topology, args.stream, args.limit)
        if args.action == "list":
            for stored in found:
                print(_describe(stored))
            print(f"{len(found)} dead letter(s)")
            return 0
        refs = args.refs or [stored.ref for stored in found]
        if args.action == "replay":
            for ref, result in (await deadletter.replay(client, topology, refs)).items():
                print(f"{ref}: {result}")
            return 0
        print(f"purged {await deadletter.purge(client, topology, refs)} dead letter(s)")
        return 0


def _describe(stored: deadletter.Stored) -> str:
    letter = stored.letter
    if letter is None:
        return f"{stored.ref}  (not a dead letter: {stored.fields})"
    return (f"{stored.ref}  order={letter.subject or '-'}  group={letter.group}  "
            f"deliveries={letter.deliveries}  {letter.failed_at}  {letter.reason}")


if __name__ == "__main__":
    sys.exit(main())
