"""A gateway's configuration: the bundled ones load, and each mistake is one
clear line naming the file, its line and the place, and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.config import BUNDLED, ConfigError, load
from gateway.endpoints import Endpoint as RunningEndpoint  # noqa: F401  # imports cleanly
from gateway.main import main
from gateway.steps import REGISTRY

pytestmark = pytest.mark.unit

TOKENS = {"LEGACY_CUSTOMER_TOKEN": "t", "SHOP_OPERATOR_TOKEN": "t",
          "WEBHOOK_SECRET": "a-secret-of-sixteen-or-more"}

GOOD = """\
name: test
endpoints:
  shop: {url: "http://127.0.0.1:8000"}
sequences:
  answer:
    - respond: {status: 200, body: {ok: true}}
proxies:
  front:
    listen: 127.0.0.1:5999
    routes:
      - method: GET
        path: /ping
        out: [{sequence: answer}]
"""


Check = Callable[..., str]


@pytest.fixture
def check(tmp_path: Path, capsys: pytest.CaptureFixture[str],
          monkeypatch: pytest.MonkeyPatch) -> Check:
    """The one line ``python -m gateway --check`` says of a configuration that is
    wrong (and that it exits 2), in this process, with only ``environ`` set
    (``test_a_mistake_exits_2_from_the_command_line``: the same, as a command)."""
    def checked(text: str, environ: dict[str, str] | None = None) -> str:
        path = tmp_path / "gateway.yaml"
        path.write_text(text)
        monkeypatch.setattr(os, "environ", dict(environ or {}))
        code = main(["--config", str(path), "--check"])
        out, err = capsys.readouterr()
        assert code == 2, out + err
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        return lines[0]

    return checked


def test_a_mistake_exits_2_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD.replace("- respond:", "- respnd:"))
    done = subprocess.run([sys.executable, "-m", "gateway", "--config", str(path), "--check"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith("gateway: gateway.yaml:6: sequences.answer.0: unknown mediator")


@pytest.mark.parametrize("name", sorted(p.name for p in BUNDLED.glob("*.yaml")))
def test_the_bundled_configurations_load(name: str) -> None:
    config = load(name, TOKENS)
    assert config.name == name.removesuffix(".yaml")


def test_a_good_one_is_said_to_be_good(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD)
    done = subprocess.run([sys.executable, "-m", "gateway", "--config", str(path), "--check"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "proxy front on 127.0.0.1:5999 (1 route(s))" in done.stdout


def test_an_unknown_mediator(check: Check) -> None:
    line = check(GOOD.replace("- respond:", "- respnd:"))
    assert line.startswith("gateway: gateway.yaml:6: sequences.answer.0: unknown mediator "
                           "'respnd'; the mediators are: call, drop, ")


def test_a_mediator_with_a_parameter_it_does_not_take(check: Check) -> None:
    line = check(GOOD.replace("status: 200,", "stauts: 200,"))
    assert line == ("gateway: gateway.yaml:6: sequences.answer.0: respond: stauts: Extra inputs "
                    "are not permitted")


def test_a_bad_url(check: Check) -> None:
    line = check(GOOD.replace('"http://127.0.0.1:8000"', "ftp://files"))
    assert line == ("gateway: gateway.yaml:3: endpoints.shop.url: Value error, 'ftp://files' is "
                    "not an http:// or https:// URL with a host")


def test_a_cycle_of_sequences(check: Check) -> None:
    text = GOOD.replace("""  answer:
    - respond: {status: 200, body: {ok: true}}""", """  answer:
    - sequence: again
  again:
    - log: once more
    - sequence: answer""")
    line = check(text)
    assert line == ("gateway: gateway.yaml:5: sequences.answer: sequences call each other in a "
                    "circle: answer → again → answer")


def test_a_missing_variable(check: Check) -> None:
    line = check(GOOD.replace('"http://127.0.0.1:8000"', "${SHOP_URL}"))
    assert line == ("gateway: gateway.yaml:3: ${SHOP_URL} is not set, and has no default "
                    "(write ${SHOP_URL:-default} for one)")


def test_a_variable_with_a_default_or_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD.replace('"http://127.0.0.1:8000"', "${SHOP_URL:-http://shop:8000}"))
    assert load(path, {}).endpoints["shop"].url == "http://shop:8000"  # type: ignore[union-attr]
    given = load(path, {"SHOP_URL": "https://given.example"})
    assert given.endpoints["shop"].url == "https://given.example"  # type: ignore[union-attr]


def test_a_variable_from_a_file(tmp_path: Path, check: Check) -> None:
    (tmp_path / "url").write_text("http://from-a-file:8000\n")
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD.replace('"http://127.0.0.1:8000"', "${SHOP_URL}"))
    found = load(path, {"SHOP_URL_FILE": str(tmp_path / "url")})
    assert found.endpoints["shop"].url == "http://from-a-file:8000"  # type: ignore[union-attr]
    line = check(path.read_text(), {"SHOP_URL_FILE": str(tmp_path / "nope")})
    assert line == (f"gateway: gateway.yaml:3: ${{SHOP_URL}}: SHOP_URL_FILE {tmp_path}/nope: "
                    "No such file or directory")


def test_a_name_that_names_nothing(check: Check) -> None:
    line = check(GOOD.replace("- sequence: answer", "- call: {endpoint: shopp}")
                 .replace("out: [{sequence: answer}]", "out: [{call: {endpoint: shopp}}]"))
    assert line == ("gateway: gateway.yaml:13: proxies.front.routes.0.out: call: no endpoint "
                    "named 'shopp' (there are: shop)")
    line = check(GOOD.replace("{sequence: answer}", "{sequence: anwser}"))
    assert "no sequence named 'anwser' (there are: answer)" in line
    group = GOOD.replace("sequences:", "  both: {failover: [shop, shop2]}\nsequences:")
    assert check(group).endswith(
        "endpoints.both: 'shop2' is not an endpoint with a url (the endpoints are: shop, both)")


def test_a_bad_template_or_condition_is_found_when_loading(check: Check) -> None:
    line = check(GOOD.replace("body: {ok: true}", 'body: {ok: "{{ body. }}"}'))
    assert line == ("gateway: gateway.yaml:6: sequences.answer.0: respond: body: Value error, "
                    "template '{{ body. }}': expected name or number")
    line = check(GOOD.replace("- respond:", "- filter: {if: 'status =='}\n    - respond:"))
    assert "filter: if: Value error, expression 'status ==': unexpected 'end of template'" in line


def test_not_yaml_and_not_a_file(check: Check) -> None:
    assert check("name: [unclosed").startswith("gateway: gateway.yaml:1: not YAML: ")
    done = subprocess.run([sys.executable, "-m", "gateway", "--config", "nope.yaml"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "nope.yaml: cannot be read (No such file or directory); the bundled ones are" in \
        done.stderr


def test_a_new_mediator_is_a_function_and_a_line() -> None:
    from gateway.message import Message
    from gateway.steps import Params, mediator

    class ShoutParams(Params):
        field: str

    @mediator("shout", ShoutParams)
    async def shout(message: Message, params: ShoutParams, runtime: object) -> None:
        message.body[params.field] = str(message.body[params.field]).upper()

    try:
        from gateway.steps import Step

        assert Step.parse({"shout": {"field": "name"}}).kind.name == "shout"
    finally:
        del REGISTRY["shout"]


def test_loading_one_is_a_config_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("- a list")
    with pytest.raises(ConfigError, match="a gateway's configuration is a mapping"):
        load(path, {})
