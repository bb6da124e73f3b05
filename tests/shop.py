"""A test driver for the saga without HTTP: seed the catalog, place orders
the way the API does, run every consumer until nothing is left."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

import redis
import redis.asyncio

from inventory_worker.handlers import WORKER as INVENTORY
from order_api import orders
from order_api.models import Customer, Product, to_fields
from order_api.schemas import OrderIn
from payment_worker.handlers import WORKER as PAYMENT
from shop import keys, topology
from shop.topology import customer_partition
from status_projector.handlers import WORKER as PROJECTOR
from streams.connection import connect, is_cluster
from streams.consumer import Consumer
from streams.topology import Topology, check_partitions, entry_order
from streams.worker import Registration

WORKERS: dict[str, Registration] = {w.group: w for w in (PAYMENT, INVENTORY, PROJECTOR)}
GROUPS = {group: worker.handlers for group, worker in WORKERS.items()}


class Shop:
    """On fakeredis, a real server, or a real cluster (``url`` is where; with a
    cluster, every consumer waits for a replica of what it reads)."""

    def __init__(
        self, client: redis.Redis, async_client: Callable[[], redis.asyncio.Redis],
        partitions: int = 1, url: str = "", wait_replicas: int = 0,
    ) -> None:
        self.r = client
        self._async_client = async_client
        self._loop: asyncio.AbstractEventLoop | None = None
        self._placer: redis.asyncio.Redis | None = None
        self.url = url
        self.cluster = is_cluster(client)
        self.wait_replicas = wait_replicas
        self.topology: Topology = topology.SHOP.with_partitions(partitions)
        Customer.topology = self.topology
        check_partitions(client, self.topology)
        self.consumers = {
            group: worker.consumer(client, partitions, name=f"test-{group}", retry_after_s=0.01,
                                   wait_replicas=wait_replicas)
            for group, worker in WORKERS.items()
        }

    def consumer(self, group: str, **options: object) -> Consumer:
        """Another consumer of ``group`` (a replica), with this shop's partitions."""
        options.setdefault("wait_replicas", self.wait_replicas)
        return WORKERS[group].consumer(self.r, self.topology.partitions, **options)

    def sync_client(self) -> redis.Redis:
        """Another client of where this shop's data is."""
        return connect(self.url, cluster=self.cluster)

    def async_client(self) -> redis.asyncio.Redis:
        return self._async_client()

    def reset_stats(self) -> None:
        """Zero the command counts (of every master)."""
        if self.cluster:
            self.r.config_resetstat(target_nodes=redis.RedisCluster.PRIMARIES)
        else:
            self.r.config_resetstat()

    def calls(self, command: str) -> int:
        """How many times ``command`` ran since ``reset_stats`` (on every master)."""
        name = f"cmdstat_{command.lower()}"
        if not self.cluster:
            return int(self.r.info("commandstats").get(name, {}).get("calls", 0))
        per_node = self.r.info("commandstats", target_nodes=redis.RedisCluster.PRIMARIES)
        return sum(int(stats.get(name, {}).get("calls", 0)) for stats in per_node.values())

    def api_settings(self) -> dict[str, object]:
        """What the API must be told to serve this shop's data."""
        return {"partitions": self.topology.partitions, "redis_wait_replicas": self.wait_replicas}

    def tag(self, customer: str) -> str:
        return self.topology.tag(customer_partition(customer, self.topology.partitions))

    def order_tag(self, order_id: str) -> str:
        return self.topology.tag_of(order_id)

    def streams(self, stream: str) -> list[str]:
        """Every partition's stream of ``stream``."""
        return self.topology.partitioned(stream)

    def stream_of(self, stream: str, order_id: str) -> str:
        """The partition's stream of ``stream`` an order's events go to."""
        return self.topology.stream(stream, self.order_tag(order_id))

    def customer_stream(self, stream: str, customer: str) -> str:
        """The partition's stream of ``stream`` a customer's orders' events go to."""
        return self.topology.stream(stream, self.tag(customer))

    def add(self, stream: str, fields: dict[str, str]) -> str:
        """XADD ``fields`` to the partition's stream of their order; return that stream."""
        name = self.stream_of(stream, fields["order_id"])
        self.r.xadd(name, fields)
        return name

    def entries(self, stream: str) -> list[tuple[str, str, dict[str, str]]]:
        """(partition's stream, entry id, fields) of every partition's ``stream``,
        oldest first."""
        found = [(name, i, f) for name in self.streams(stream) for i, f in self.r.xrange(name)]
        return sorted(found, key=lambda e: entry_order(e[1]))

    def pending(self, stream: str, group: str) -> int:
        """Entries of every partition's ``stream`` that ``group`` read and has not acknowledged."""
        return sum(
            self.r.xpending(name, group)["pending"]
            for name in self.streams(stream)
            if self.r.exists(name)
        )

    def order_key(self, order_id: str) -> str:
        return keys.order(order_id, self.order_tag(order_id))

    def history_key(self, order_id: str) -> str:
        return keys.order_history(order_id, self.order_tag(order_id))

    def customer_key(self, customer: str) -> str:
        return keys.customer(customer, self.tag(customer))

    def by_status(self, status: str) -> list[str]:
        """The orders of one status, of every partition."""
        return [o for tag in self.topology.tags()
                for o in self.r.zrange(keys.orders_by_status(status, tag), 0, -1)]

    def product(self, pk: str, stock: int, price_cents: int = 1000) -> None:
        record = Product(pk=pk, name=pk.title(), price_cents=price_cents, stock=stock)
        self.r.hset(keys.product(pk), mapping=to_fields(record))

    def customer(self, pk: str, balance_cents: int) -> None:
        record = Customer(pk=pk, name=pk.title(), email=f"{pk}@example.com",
                          balance_cents=balance_cents)
        self.r.hset(self.customer_key(pk), mapping=to_fields(record))

    def order(self, customer: str, *lines: tuple[str, int]) -> str:
        """Place an order through the API's own code; return its id."""
        body = OrderIn.model_validate(
            {"customer_id": customer,
             "lines": [{"product_id": p, "quantity": q} for p, q in lines]}
        )
        if self._loop is None:  # one loop and one client for every order of the test
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(self._place(body, customer))

    async def _place(self, body: OrderIn, customer: str) -> str:
        if self._placer is None:
            self._placer = self._async_client()
        try:
            return (await orders.place(self._placer, self.topology, body, customer))[0].id
        except redis.ConnectionError:  # the server was restarted since: a new client
            await self._placer.aclose()
            self._placer = self._async_client()
            return (await orders.place(self._placer, self.topology, body, customer))[0].id

    def close(self) -> None:
        """Let go of the client orders were placed with, and its loop."""
        if self._loop is not None:
            if self._placer is not None:
                self._loop.run_until_complete(self._placer.aclose())
            self._loop.close()
            self._loop = self._placer = None

    def settle(self, groups: Iterable[str] = tuple(GROUPS), rounds: int = 10) -> None:
        """Run the consumers of ``groups`` in turn until none has anything left."""
        groups = list(groups)
        for _ in range(rounds):
            for group in groups:
                self.consumers[group].run(once=True)
            if self.backlog(groups) == 0:
                return
        raise AssertionError(f"consumers did not settle: backlog {self.backlog(groups)}")

    def backlog(self, groups: Iterable[str] = tuple(GROUPS)) -> int:
        """Entries of these groups not yet read, or read and not acknowledged."""
        wanted, total = set(groups), 0
        for stream in (*self.topology.all_streams(), *self.topology.dead_streams()):
            if not self.r.exists(stream):
                continue
            for group in self.r.xinfo_groups(stream):
                if group["name"] in wanted:
                    total += (group.get("lag") or 0) + group["pending"]
        return total

    def status(self, order_id: str) -> str:
        return self.r.hget(self.order_key(order_id), "status")

    def balance(self, customer: str) -> int:
        return int(self.r.hget(self.customer_key(customer), keys.BALANCE_FIELD))

    def stock(self, product: str) -> int:
        return int(self.r.hget(keys.product(product), keys.STOCK_FIELD))

    def events(self, stream: str) -> list[dict[str, str]]:
        """The entries of a stream; of every partition's, oldest first, for a
        stream named without a tag."""
        names = self.streams(stream) if stream in self.topology.streams else [stream]
        if stream.endswith(".dead") and stream.removesuffix(".dead") in self.topology.streams:
            names = [n + ".dead" for n in self.streams(stream.removesuffix(".dead"))]
        found = [(entry_id, fields) for name in names for entry_id, fields in self.r.xrange(name)]
        return [fields for _id, fields in sorted(found, key=lambda e: entry_order(e[0]))]


def statuses(client: redis.Redis, order_ids: list[str], partitions: int = 1) -> list[str]:
    """The status of each order, in one round trip."""
    shop = topology.SHOP.with_partitions(partitions)
    with client.pipeline(transaction=False) as pipe:
        for order_id in order_ids:
            pipe.hget(keys.order(order_id, shop.tag_of(order_id)), "status")
        return pipe.execute()
