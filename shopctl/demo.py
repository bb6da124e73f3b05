"""Demo data, loaded through the API on first start (a second start finds it
there and changes nothing)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from access import demo as demo_tokens
from streams.connection import connect_async

PRODUCTS = [
    {"id": "item1", "name": "Coffee beans, 1 kg", "price_cents": 2400, "stock": 100},
    {"id": "item2", "name": "Espresso cup", "price_cents": 1200, "stock": 50},
]
CUSTOMERS = [
    {"id": "alice", "name": "Alice", "email": "alice@example.com", "balance_cents": 1_000_000},
    {"id": "bob", "name": "Bob", "email": "bob@example.com", "balance_cents": 500},
    # Who the legacy order service's clients order as (gateway/configs/legacy-flask.yaml).
    {"id": "walk-in", "name": "Walk-in customer", "email": "walk-in@example.com",
     "balance_cents": 100_000_000},
]


def post(url: str, body: dict, token: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as err:
        return err.code, json.load(err)


def load(api_url: str, token: str | None) -> Iterator[str]:
    """Create the demo records that are missing, as the operator whose
    ``token`` this is (None with authentication off); say what happened to each."""
    for path, records in (("/products", PRODUCTS), ("/customers", CUSTOMERS)):
        for record in records:
            status, answer = post(api_url + path, record, token)
            if status == 201:
                yield f"added {path[1:-1]} {record['id']}: {_brief(answer)}"
            elif status == 409:
                yield f"{path[1:-1]} {record['id']} already there, kept as it is"
            else:
                raise RuntimeError(f"loading demo {path[1:-1]} {record['id']}: {status} {answer}")


def _brief(record: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in record.items() if k != "id")


def seed(api_url: str, redis_url: str, data_dir: Path, *, records: bool = True,
         say: Callable[[str], None] = print, cluster: bool = False) -> dict[str, str]:
    """What a first start needs: an operator token, the demo records (loaded with
    it through the API), and alice's and bob's tokens, each kept in
    ``data_dir/tokens``. Returns the tokens, by who they are for. Safe to run
    again: what exists and works is kept."""

    async def ensure(customers: list[str]) -> dict[str, str]:
        async with connect_async(redis_url, cluster=cluster, max_connections=2) as r:
            return await demo_tokens.ensure(r, data_dir, customers)

    found = asyncio.run(ensure([]))
    if records:
        for line in load(api_url, found[demo_tokens.OPERATOR]):
            say(line)
        found = asyncio.run(ensure([str(c["id"]) for c in CUSTOMERS]))
    return found
