"""docker-compose.yml cannot run here (no Docker engine), so check what can be
checked: every command points at code that exists, workers can scale, Redis
persists and is healthy before anything starts."""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
REQUIRED = "${REDIS_PASSWORD:?set REDIS_PASSWORD in .env (see .env.example)}"
PASSWORD_URL = f"redis://:{REQUIRED}@redis:6379/0"


# Ours: built from this repository (the others run an image as it is).
OURS = [n for n in SERVICES if "build" in SERVICES[n]]


@pytest.mark.parametrize("name", OURS)
def test_every_service_command_points_at_code_that_exists(name: str) -> None:
    command = SERVICES[name]["command"]
    if command[:2] == ["python", "-m"]:
        module = command[2]
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{name}: no module {module}"
        if spec.submodule_search_locations:  # a package runs its __main__
            assert importlib.util.find_spec(f"{module}.__main__"), f"{name}: no {module}.__main__"
        else:
            assert 'if __name__ == "__main__"' in Path(spec.origin).read_text()
    else:
        assert command[0] in SCRIPTS, f"{name}: {command[0]} is not a console script"
        target = SCRIPTS[command[0]].split(":")[0]
        assert importlib.util.find_spec(target)
    assert SERVICES[name]["build"] == "."


def test_redis_persists_and_everything_waits_for_it_to_be_healthy() -> None:
    redis = SERVICES["redis"]
    assert "--appendonly" in redis["command"] and "redis-data:/data" in redis["volumes"]
    assert redis["healthcheck"]["test"][-1] == "ping"
    for name in ("api", "projector", "payment_worker", "inventory_worker"):
        assert SERVICES[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert SERVICES[name]["environment"]["REDIS_URL"] == PASSWORD_URL
        # One partition count for every process of the data (PARTITIONS in .env).
        assert SERVICES[name]["environment"]["PARTITIONS"] == "${PARTITIONS:-1}"


@pytest.mark.parametrize("name", ["payment_worker", "inventory_worker", "projector"])
def test_workers_can_be_scaled(name: str) -> None:
    # --scale needs no fixed name or host port; each replica's consumer name
    # defaults to its container's hostname and pid.
    assert "container_name" not in SERVICES[name]
    assert "ports" not in SERVICES[name]


def test_the_image_copies_every_package_the_services_run() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in ("access", "streams", "order_api", "payment_worker", "inventory_worker",
                    "shopctl", "mcp_servers", "gateway", "dashboard"):
        assert f"COPY {package} ./{package}" in dockerfile


@pytest.mark.parametrize(
    "name", ["redis", "api", "projector", "payment_worker", "inventory_worker", "gateway"]
)
def test_what_dies_is_started_again(name: str) -> None:
    assert SERVICES[name]["restart"] == "unless-stopped"
    if name == "redis":
        assert SERVICES[name]["command"][3:5] == ["--appendfsync", "everysec"]


def test_redis_has_a_password_from_the_env_file_and_every_client_uses_it() -> None:
    redis = SERVICES["redis"]
    assert redis["command"][-2:] == ["--requirepass", REQUIRED]
    assert redis["environment"]["REDISCLI_AUTH"] == REQUIRED  # the health check's redis-cli
    for name in OURS:
        assert SERVICES[name]["environment"]["REDIS_URL"] == PASSWORD_URL, name
    example = (ROOT / ".env.example").read_text()
    assert "\nREDIS_PASSWORD=" in example
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_the_api_checks_tokens_and_the_demo_keeps_its_tokens_on_the_host() -> None:
    api = SERVICES["api"]["environment"]
    assert api.get("API_AUTH", "true") == "true"  # bound to 0.0.0.0 in its container
    assert set(api["API_TRUSTED_HOSTS"].split(",")) == {"127.0.0.1", "localhost", "api"}
    demo = SERVICES["demo"]
    assert demo["command"][-2:] == ["--data-dir", "/data"]
    assert demo["volumes"] == ["./.data/compose:/data"]


def test_the_gateway_runs_a_configuration_that_loads_with_what_compose_gives_it(
        tmp_path: Path) -> None:
    from gateway.config import load

    gateway = SERVICES["gateway"]
    assert gateway["command"][-1] == "${GATEWAY_CONFIG:-legacy-flask.yaml}"
    assert gateway["depends_on"] == {"demo": {"condition": "service_completed_successfully"}}
    assert gateway["volumes"] == ["./.data/compose:/data:ro"]  # the demo's tokens
    assert gateway["ports"] == ["127.0.0.1:5000:5000", "127.0.0.1:5001:5001"]
    environment = dict(gateway["environment"])
    # The token files the demo service writes, here in a folder of the test's.
    for name in ("SHOP_OPERATOR_TOKEN_FILE", "LEGACY_CUSTOMER_TOKEN_FILE"):
        token = tmp_path / Path(environment[name]).name
        token.write_text("a-token\n")
        environment[name] = str(token)
    environment["WEBHOOK_SECRET"] = "from-the-env-file-16+"
    environment["WEBHOOK_FALLBACK_URL"] = ""
    environment["WEBHOOK_URL"] = "http://host.docker.internal:9099/hooks"
    legacy = load("legacy-flask.yaml", environment)
    assert {p.listen for p in legacy.proxies.values()} == {"0.0.0.0:5000", "0.0.0.0:5001"}
    assert load("webhooks.yaml", environment).stores["hooks"].sign is not None
    example = (ROOT / ".env.example").read_text()
    assert "\nGATEWAY_CONFIG=" in example and "\nWEBHOOK_SECRET=" in example


# -- docker-compose.cluster.yml: the same processes on a Redis Cluster ------------------

CLUSTER = yaml.safe_load((ROOT / "docker-compose.cluster.yml").read_text())["services"]
NODES = [f"redis-{i}" for i in range(6)]
CLIENTS = ["api", "projector", "payment_worker", "inventory_worker", "demo", "gateway"]
CLUSTER_URL = f"redis://:{REQUIRED}@redis-0:6379"


def test_the_cluster_has_six_persistent_nodes_with_the_password() -> None:
    for name in NODES:
        node = CLUSTER[name]
        command = node["command"]
        option = dict(zip(command[1::2], command[2::2], strict=False))
        assert option["--cluster-enabled"] == "yes" and option["--appendonly"] == "yes"
        assert option["--appendfsync"] == "everysec"
        assert option["--requirepass"] == option["--masterauth"] == REQUIRED
        # The other masters serve their slots while one fails over.
        assert option["--cluster-require-full-coverage"] == "no"
        assert node["volumes"] == [f"{name}:/data"]
        assert node["restart"] == "unless-stopped"
        assert node["environment"]["REDISCLI_AUTH"] == REQUIRED
        assert node["healthcheck"]["test"][-1] == "ping"
    assert len({CLUSTER[n]["volumes"][0] for n in NODES}) == 6


def test_the_cluster_is_formed_once_every_node_is_healthy_by_shopctl() -> None:
    init = CLUSTER["cluster-init"]
    command = init["command"]
    assert command[:3] == ["shopctl", "cluster", "form"]
    assert command[3:9] == [f"{n}:6379" for n in NODES]
    assert command[command.index("--masters") + 1] == "3"
    assert command[command.index("--partitions") + 1] == "${CLUSTER_PARTITIONS:-12}"
    assert init["environment"]["REDIS_PASSWORD"] == REQUIRED
    assert init["restart"] == "no" and init["build"] == "."
    assert init["depends_on"] == {n: {"condition": "service_healthy"} for n in NODES}
    assert importlib.util.find_spec("shopctl.cluster")
    assert SCRIPTS["shopctl"] == "shopctl.cli:main"
    assert "cluster" in (ROOT / "shopctl" / "cli.py").read_text()


@pytest.mark.parametrize("name", CLIENTS)
def test_every_client_uses_the_cluster_with_one_partition_count(name: str) -> None:
    service = CLUSTER[name]
    assert service["environment"]["REDIS_CLUSTER_URL"] == CLUSTER_URL
    assert service["environment"]["PARTITIONS"] == "${CLUSTER_PARTITIONS:-12}"
    assert "REDIS_URL" not in service["environment"]
    assert service["build"] == "."
    command = service["command"]
    if command[:2] == ["python", "-m"]:
        assert importlib.util.find_spec(f"{command[2]}.__main__"), name
    else:
        assert command[0] in SCRIPTS
    if name == "gateway":  # it needs the demo's tokens
        assert service["depends_on"] == {"demo": {"condition": "service_completed_successfully"}}
        assert service["environment"]["SHOP_API_URL"] == "http://api:8000"
    elif name != "demo":
        assert service["depends_on"] == {"cluster-init": {
            "condition": "service_completed_successfully"}}
    if name != "demo":
        assert service["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", ["payment_worker", "inventory_worker", "projector"])
def test_cluster_workers_can_be_scaled(name: str) -> None:
    assert "container_name" not in CLUSTER[name] and "ports" not in CLUSTER[name]


def test_the_cluster_api_checks_tokens_and_is_healthy_only_when_every_partition_has_a_master(
) -> None:
    api = CLUSTER["api"]
    assert api["environment"].get("API_AUTH", "true") == "true"
    assert "readyz" in api["healthcheck"]["test"][-1]
    assert CLUSTER["demo"]["depends_on"] == {"api": {"condition": "service_healthy"}}
    assert "\nCLUSTER_PARTITIONS=" in (ROOT / ".env.example").read_text()


# -- metrics: Prometheus and Grafana ----------------------------------------------------

PROMETHEUS = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
GRAFANA = ROOT / "deploy/grafana"
WORKERS = ("projector", "payment_worker", "inventory_worker", "gateway")


def known_metrics() -> set[str]:
    """Every metric family the code defines: what a dashboard may ask for."""
    from prometheus_client import REGISTRY

    import gateway.metrics  # noqa: F401  (each defines its metrics when imported)
    import order_api.metrics  # noqa: F401
    import status_projector.metrics  # noqa: F401
    from streams.metrics import flow_families

    return ({family.name for family in REGISTRY.collect()}
            | {family.name for family in flow_families([], lambda name: (name, ""))})


@pytest.mark.parametrize("file", ["docker-compose.yml", "docker-compose.cluster.yml"])
def test_prometheus_scrapes_the_api_and_every_replica_of_every_worker(file: str) -> None:
    services = yaml.safe_load((ROOT / file).read_text())["services"]
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    assert jobs["api"]["static_configs"][0]["targets"] == ["api:8000"]
    assert jobs["api"]["metrics_path"] == "/metrics"
    for name in WORKERS:
        env = services[name]["environment"]
        # Each replica serves its metrics inside compose's network; no host port to clash.
        assert env["METRICS_PORT"] == "9100" and env["METRICS_HOST"] == "0.0.0.0"
        [found] = jobs[name]["dns_sd_configs"]  # by DNS: every replica of a scaled service
        assert found == {"names": [name], "type": "A", "port": 9100}
    prometheus = services["prometheus"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus[
        "volumes"]
    assert prometheus["ports"] == ["127.0.0.1:9090:9090"]


@pytest.mark.parametrize("file", ["docker-compose.yml", "docker-compose.cluster.yml"])
def test_grafana_is_provisioned_with_prometheus_and_the_shops_dashboard(file: str) -> None:
    grafana = yaml.safe_load((ROOT / file).read_text())["services"]["grafana"]
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in grafana["volumes"]}
    assert mounts["/etc/grafana/provisioning"] == "./deploy/grafana/provisioning"
    assert mounts["/var/lib/grafana/dashboards"] == "./deploy/grafana/dashboards"
    assert grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"].startswith(
        "${GRAFANA_ADMIN_PASSWORD:?")
    assert "GRAFANA_ADMIN_PASSWORD=" in (ROOT / ".env.example").read_text()
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    [source] = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())[
        "datasources"]
    assert source["url"] == "http://prometheus:9090" and source["uid"] == "prometheus"
    [provider] = yaml.safe_load((GRAFANA / "provisioning/dashboards/shop.yml").read_text())[
        "providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"


def test_every_panel_of_the_dashboard_asks_for_metrics_the_code_serves() -> None:
    dashboard = json.loads((GRAFANA / "dashboards/shop.json").read_text())
    known = known_metrics()
    asked = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"
        for target in panel["targets"]:
            for name in re.findall(r"\b((?:shop|streams|gateway)_[a-z_]+)", target["expr"]):
                asked.add(name)
                base = re.sub(r"_(total|bucket|count|sum)$", "", name)
                assert base in known, f"{panel['title']}: {name} is no metric of ours"
    # Every family of ours is on a panel.
    assert {re.sub(r"_(total|bucket|count|sum)$", "", n) for n in asked} >= {
        n for n in known if n.startswith(("shop_", "streams_", "gateway_"))} - {
        "gateway_endpoint_requests"}
