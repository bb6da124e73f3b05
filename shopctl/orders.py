"""``shopctl order place`` and ``shopctl order watch``: an order from the
command line, through the API as any client, with no JSON to quote (the
same words in bash and PowerShell).

    shopctl order place --customer alice item1=2 item2=1
    shopctl order watch ord_5e2b...

``place`` prints the new order's id alone on stdout (what it says of it goes
to stderr), so that ``shopctl order watch $(shopctl order place ...)`` works.
The token is ``--token``, else SHOP_TOKEN, else the demo token ``shopctl up``
keeps for that customer (``DATA_DIR/tokens/<customer>``; the operator's for
``watch``).
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx2

from shop.statuses import FINAL_STATUSES

LINE = re.compile(r"([A-Za-z0-9_.:-]{1,64})=([0-9]{1,6})")


class OrderError(Exception):
    """What went wrong, said for the person at the terminal."""


def parse_lines(words: list[str]) -> list[dict[str, Any]]:
    """``item1=2`` words as order lines."""
    lines = []
    for word in words:
        found = LINE.fullmatch(word)
        if found is None or int(found[2]) < 1:
            raise OrderError(f"{word!r} is not PRODUCT=QUANTITY (like item1=2, quantity 1 or "
                             "more)")
        lines.append({"product_id": found[1], "quantity": int(found[2])})
    return lines


def token_for(given: str | None, data_dir: Path, who: str) -> str:
    if given:
        return given
    kept = data_dir / "tokens" / who
    try:
        return kept.read_text().strip()
    except OSError:
        raise OrderError(f"no token: give --token (or SHOP_TOKEN), or start the shop with "
                         f"`make up`, which keeps {who}'s demo token in {kept}") from None


def _problem(answer: httpx2.Response) -> str:
    try:
        detail = answer.json().get("detail")
    except ValueError:
        detail = answer.text
    return f"{answer.status_code}: {detail}"


def place(api_url: str, token: str, lines: list[dict[str, Any]],
          idempotency_key: str | None = None) -> dict[str, Any]:
    """Place the order; the API's answer (the order, pending)."""
    headers = {"Authorization": f"Bearer {token}"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    try:
        answer = httpx2.post(f"{api_url}/orders", json={"lines": lines}, headers=headers,
                             timeout=30)
    except httpx2.HTTPError as exc:
        raise OrderError(f"the API at {api_url} did not answer: {exc}") from None
    if answer.status_code != 202:
        raise OrderError(f"order refused: {_problem(answer)}")
    return answer.json()


def watch(api_url: str, token: str, order_id: str, say: Any = print,
          timeout_s: float = 60.0, poll_s: float = 0.2) -> dict[str, Any]:
    """Say each event of the order as its history shows it, until its status
    is final; the order then."""
    seen: set[str] = set()
    status = None
    deadline = time.monotonic() + timeout_s
    with httpx2.Client(base_url=api_url, timeout=10,
                       headers={"Authorization": f"Bearer {token}"}) as http:
        while True:
            try:
                answer = http.get(f"/orders/{order_id}")
            except httpx2.HTTPError as exc:
                raise OrderError(f"the API at {api_url} did not answer: {exc}") from None
            if answer.status_code != 200:
                raise OrderError(f"order {order_id}: {_problem(answer)}")
            order = answer.json()
            for event in order["history"]:
                if event["event_id"] not in seen:
                    seen.add(event["event_id"])
                    say(f"{event['at']}  {event['type']:<18} {event['stream']} "
                        f"{event['entry_id']}")
            if order["status"] != status:
                status = order["status"]
                say(f"{order_id} {status}" + (f": {order['reason']}" if order["reason"] else ""))
            if status in FINAL_STATUSES:
                return order
            if time.monotonic() > deadline:
                raise OrderError(f"order {order_id} is still {status} after {timeout_s:.0f}s")
            time.sleep(poll_s)


def describe(order: dict[str, Any]) -> str:
    lines = ", ".join(f"{line['product_id']}×{line['quantity']}" for line in order["lines"])
    return (f"order {order['id']} {order['status']} for {order['customer_id']}: {lines}, "
            f"{order['total_cents']} cents")


def err(text: str) -> None:
    print(text, file=sys.stderr)
