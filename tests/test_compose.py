"""docker-compose.yml cannot run here (no Docker engine), so check what can be
checked: every command points at code that exists, workers can scale, Redis
persists and is healthy before anything starts."""

from __future__ import annotations

import importlib.util
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


@pytest.mark.parametrize("name", [n for n in SERVICES if n != "redis"])
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
                    "shopctl", "mcp_servers"):
        assert f"COPY {package} ./{package}" in dockerfile


@pytest.mark.parametrize(
    "name", ["redis", "api", "projector", "payment_worker", "inventory_worker"]
)
def test_what_dies_is_started_again(name: str) -> None:
    assert SERVICES[name]["restart"] == "unless-stopped"
    if name == "redis":
        assert SERVICES[name]["command"][3:5] == ["--appendfsync", "everysec"]


def test_redis_has_a_password_from_the_env_file_and_every_client_uses_it() -> None:
    redis = SERVICES["redis"]
    assert redis["command"][-2:] == ["--requirepass", REQUIRED]
    assert redis["environment"]["REDISCLI_AUTH"] == REQUIRED  # the health check's redis-cli
    for name, service in SERVICES.items():
        if name != "redis":
            assert service["environment"]["REDIS_URL"] == PASSWORD_URL, name
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
