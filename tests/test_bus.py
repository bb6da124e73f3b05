"""The bus (``streams/``) knows no shop: a second, tiny topology runs on it."""

from __future__ import annotations

import ast
import logging
import re
import zlib
from pathlib import Path

import fakeredis
import pytest
from pydantic import BaseModel

from shop.topology import SHOP
from streams import middleware
from streams.consumer import Consumer
from streams.envelope import Envelope, Header
from streams.outcomes import Apply
from streams.scripts import Step
from streams.topology import EventType, Topology

pytestmark = pytest.mark.unit


class TicketOpened(BaseModel):
    title: str


class TicketClosed(BaseModel):
    resolution: str


def ticket_partition(ticket_id: str, partitions: int) -> int:
    return zlib.crc32(ticket_id.encode()) % partitions


DESK = Topology(
    name="desk",
    subject="ticket_id",
    partition_of=ticket_partition,
    events=(EventType("ticket.opened", TicketOpened, "tickets.opened"),
            EventType("ticket.closed", TicketClosed, "tickets.closed")),
    readers={"tickets.opened": ("triage",), "tickets.closed": ("archive",)},
).with_partitions(2)

CLOSE = Step("close", """
-- K: the ticket's record, tickets.closed. A: the closed event's data
local done = guard(K[1], nil, '')
if done then return done end
redis.call('HSET', K[1], 'status', 'closed')
return {'closed', publish(K[2], 'ticket.closed', A[1])}
""")


def close(event: Envelope) -> Apply:
    """ticket.opened: close it at once, in the ticket's partition."""
    return Apply(CLOSE, keys=[f"desk:ticket:{event.subject}{event.tag}",
                              DESK.stream_of("ticket.closed", event.tag)],
                 args=[TicketClosed(resolution="works for me").model_dump_json()],
                 header=Header.new(event.subject, causation_id=event.event_id))


def test_a_second_topology_runs_on_the_same_bus(caplog: pytest.LogCaptureFixture) -> None:
    r = fakeredis.FakeRedis(decode_responses=True)
    tickets = [f"t{i}" for i in range(6)]
    for ticket in tickets:
        opened = Envelope.new(DESK, TicketOpened(title=f"printer {ticket}"), ticket)
        r.xadd(DESK.stream_of("ticket.opened", DESK.tag_of(ticket)), opened.to_fields(DESK))
    triage = Consumer(r, DESK, "triage", {"ticket.opened": close}, middleware=middleware.DEFAULT)
    assert sorted(triage.streams) == ["tickets.opened{p0}", "tickets.opened{p1}"]
    with caplog.at_level(logging.INFO, "streams.handled"):
        triage.run(once=True)
        triage.run(once=True)  # nothing left: nothing twice

    closed = [Envelope.parse(fields, DESK, tag)
              for tag in DESK.tags()
              for _id, fields in r.xrange(DESK.stream_of("ticket.closed", tag))]
    assert sorted(e.subject for e in closed) == tickets
    assert all(e.tag == DESK.tag_of(e.subject) for e in closed)  # in the ticket's partition
    assert all(e.payload == TicketClosed(resolution="works for me") for e in closed)
    assert all("ticket_id" in fields for _id, fields in r.xrange("tickets.closed{p0}"))
    assert all(r.hget(f"desk:ticket:{t}{DESK.tag_of(t)}", "status") == "closed" for t in tickets)
    assert sum(r.xpending(s, "triage")["pending"] for s in triage.streams) == 0
    assert any(re.search(r"triage\s+ticket=t\d closed", m) for m in caplog.messages)


def _strings(tree: ast.AST) -> list[str]:
    """The string constants of a module's code, docstrings left out."""
    docstrings = {
        id(node.body[0].value) for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


def test_the_bus_names_nothing_of_the_shop() -> None:
    shop_names = {SHOP.name + ":", SHOP.subject, *SHOP.streams, *(e.name for e in SHOP.events),
                  *SHOP.groups()}
    for path in sorted(Path("streams").glob("*.py")):
        tree = ast.parse(path.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                    if isinstance(node, ast.Import) for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom)}
        assert not imported & {"shop", "order_api", "payment_worker", "inventory_worker",
                               "status_projector", "access"}, path
        found = {name for text in _strings(tree) for name in shop_names
                 if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text)}
        assert not found, f"{path} names {sorted(found)}"
