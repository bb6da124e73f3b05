"""Fixtures: fakeredis for pure logic, a real server for stream semantics.

The real server is the same binary the launcher runs (``shopctl.redis_server``),
started once per session on a free port without persistence; every test that
uses it starts from an empty database.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import fakeredis
import pytest
import redis
import redis.asyncio

from access import tokens
from order_api.main import asgi, create_app
from order_api.models import Customer
from order_api.settings import ApiSettings
from shop.topology import SHOP
from shopctl.cluster import LocalCluster
from shopctl.redis_server import RedisServer, free_port
from tests import cluster as local_cluster
from tests.receivers import Receiver
from tests.shop import Shop

# What TestClient sends as its Host header.
TEST_HOSTS = "testserver"


def api_app(client: redis.asyncio.Redis, **settings: object) -> object:
    """The API as it is served (guard, hot path, app) on ``client``."""
    return asgi(create_app(ApiSettings(api_trusted_hosts=TEST_HOSTS, **settings),  # type: ignore[arg-type]
                           client=client))


def make_token(connect: Callable[[], redis.asyncio.Redis], role: tokens.Role,
               customer: str | None = None, partitions: int = 1) -> str:
    """A new token, through a client of its own (the caller's may be bound to
    another event loop)."""
    async def create() -> str:
        r = connect()
        try:
            return (await tokens.create(r, SHOP.with_partitions(partitions), role,
                                      customer_id=customer))[0]
        finally:
            await r.aclose()

    return asyncio.run(create())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(autouse=True)
def one_partition() -> Iterator[None]:
    """The catalog models are bound to a process's partitions (models.bind); a
    test at 4 partitions leaves them as every other test expects them: at one."""
    yield
    Customer.topology = SHOP


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(free_port(), tmp_path_factory.mktemp("redis"), aof=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def real(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the real server, on an empty database, emptied again after
    the test (a test at four partitions leaves no partition count behind for
    a process started by the next)."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    client.flushall()
    yield client
    client.flushall()
    client.close()


@pytest.fixture
def fake_server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def fake(fake_server: fakeredis.FakeServer) -> redis.Redis:
    """fakeredis with Lua: for handler logic, where idle time does not matter."""
    return fakeredis.FakeRedis(server=fake_server, decode_responses=True)


@pytest.fixture
def afake(fake_server: fakeredis.FakeServer) -> redis.asyncio.Redis:
    return fakeredis.FakeAsyncRedis(server=fake_server, decode_responses=True)


# The integration tests run at one partition (stream and key names as they
# are on a single server) and at four (every name tagged).
PARTITIONS = [pytest.param(1, id="1p"), pytest.param(4, id="4p")]


@pytest.fixture(
    params=[
        pytest.param(("fakeredis", 1), marks=pytest.mark.unit, id="fakeredis"),
        pytest.param(("real", 1), marks=pytest.mark.integration, id="real-1p"),
        pytest.param(("real", 4), marks=pytest.mark.integration, id="real-4p"),
        pytest.param(("cluster", 12), marks=pytest.mark.integration, id="cluster"),
    ]
)
def shop(request: pytest.FixtureRequest) -> Iterator[Shop]:
    """The saga's driver, on fakeredis and again on the real server, at one
    partition and at four, and on the real cluster at twelve."""
    where, partitions = request.param
    if where == "cluster":
        driver = cluster_shop(request.getfixturevalue("cluster"))
    elif where == "real":
        real, server = request.getfixturevalue("real"), request.getfixturevalue("redis_server")
        driver = real_shop_of(real, server, partitions)
    else:
        server = request.getfixturevalue("fake_server")
        driver = Shop(
            request.getfixturevalue("fake"),
            lambda: fakeredis.FakeAsyncRedis(server=server, decode_responses=True),
        )
    yield driver
    driver.close()
    if where == "cluster":
        driver.r.close()


def real_shop_of(real: redis.Redis, server: RedisServer, partitions: int) -> Shop:
    return Shop(
        real,
        lambda: redis.asyncio.Redis.from_url(server.url, decode_responses=True),
        partitions,
        url=server.url,
    )


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A real local Redis Cluster (3 masters, 3 replicas), shared; emptied by
    each test that uses it. Tests that fail nodes over start their own."""
    started = local_cluster.start(tmp_path_factory.mktemp("cluster"))
    yield started
    started.stop()


def cluster_shop(cluster: LocalCluster) -> Shop:
    """The saga's driver on the cluster, at 12 partitions, every consumer waiting
    for a replica of what it reads."""
    local_cluster.flush(cluster)
    return Shop(local_cluster.sync_client(cluster), local_cluster.async_client(cluster),
                local_cluster.PARTITIONS, url=cluster.url, wait_replicas=1)


@pytest.fixture(params=[*PARTITIONS, pytest.param("cluster", id="cluster")])
def real_shop(redis_server: RedisServer, request: pytest.FixtureRequest) -> Iterator[Shop]:
    """The saga's driver on the real server, at one partition and at four, and
    on the real cluster at twelve."""
    if request.param == "cluster":
        driver = cluster_shop(request.getfixturevalue("cluster"))
    else:
        driver = real_shop_of(request.getfixturevalue("real"), redis_server, request.param)
    yield driver
    driver.close()
    if request.param == "cluster":
        driver.r.close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Start real HTTP receivers (``tests.receivers``); stopped after the test."""
    started: list[Receiver] = []

    def start(**kw: object) -> Receiver:
        started.append(Receiver(**kw).start())  # type: ignore[arg-type]
        return started[-1]

    yield start
    for receiver in started:
        receiver.stop()
