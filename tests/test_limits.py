"""The API as uvicorn serves it, with its limits: headers capped (431), slow
headers and slow bodies timed out (408), idle keep-alive connections closed,
and the open-file limit raised. Then what hostile clients do to a normal one
(``shopctl bench --abuse``, on a small size): it reports, and these tests check
what it reports, never how fast."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio

from shopctl.redis_server import RedisServer, free_port
from tests.conftest import make_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def api(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = free_port()
    log = tmp_path_factory.mktemp("api") / "api.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "order_api"], stdout=log.open("w"), stderr=subprocess.STDOUT,
        env=os.environ | {"REDIS_URL": redis_server.url, "API_PORT": str(port),
                          "API_HEADER_TIMEOUT_S": "1", "API_BODY_TIMEOUT_S": "1",
                          "API_KEEPALIVE_TIMEOUT_S": "1", "API_MAX_HEADER_BYTES": "8192"})
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "the API did not start"
            time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(10)
    output = log.read_text()
    assert "Traceback" not in output and "Exception in ASGI" not in output, output
    assert "Invalid HTTP request received" not in output  # each refusal answered once


def exchange(port: int, *parts: bytes, pause_s: float = 0.0, wait_s: float = 10) -> bytes:
    """Send ``parts`` (with a pause between them), then read until the server
    closes the connection (at most ``wait_s``)."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(wait_s)
        for part in parts:
            try:
                sock.sendall(part)
            except OSError:  # closed by the server already
                break
            time.sleep(pause_s)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def status_and_body(answer: bytes) -> tuple[int, dict]:
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_headers_over_the_cap_are_431_in_json_and_the_connection_is_closed(api: int) -> None:
    answer = exchange(api, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"x" * 9000
                      + b"\r\n\r\n")
    status, body = status_and_body(answer)
    assert status == 431 and b"connection: close" in answer.lower()
    assert body == {"detail": "the request line and headers are over 8192 bytes "
                              "(API_MAX_HEADER_BYTES)"}
    assert answer.count(b"HTTP/1.1") == 1  # one answer, not also uvicorn's 400


def test_headers_sent_too_slowly_are_cut_off_with_408(api: int) -> None:
    answer = exchange(api, *(b"GET /healthz HTTP/1.1\r\n", *([b"X-Slow: a\r\n"] * 30)),
                      pause_s=0.1)
    status, body = status_and_body(answer)
    assert status == 408
    assert body == {"detail": "the request's headers did not arrive within 1s "
                              "(API_HEADER_TIMEOUT_S)"}


@pytest.mark.parametrize("path", ["/products", "/orders"])  # FastAPI's route, and the hot path
def test_a_body_sent_too_slowly_is_cut_off_with_408(
    api: int, redis_server: RedisServer, path: str
) -> None:
    operator = make_token(lambda: redis.asyncio.Redis.from_url(redis_server.url), "operator")
    head = (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer %s\r\nContent-Length: 100\r\n\r\n" % (
                path.encode(), operator.encode()))
    answer = exchange(api, head, *([b" "] * 40), pause_s=0.1)
    status, body = status_and_body(answer)
    assert status == 408
    assert body["detail"] == "the request's body did not arrive within 1s (API_BODY_TIMEOUT_S)"


def test_an_idle_keep_alive_connection_is_closed(api: int) -> None:
    answer = exchange(api, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200") and answer.count(b"HTTP/1.1") == 1  # then closed


def test_a_connection_that_sends_nothing_is_closed(api: int) -> None:
    assert exchange(api).startswith(b"HTTP/1.1 408")


def test_the_api_raises_its_open_file_limit_as_far_as_the_system_allows(api: int) -> None:
    pid = next(int(p) for p in os.listdir("/proc") if p.isdigit() and b"order_api" in
               Path(f"/proc/{p}/cmdline").read_bytes() and
               f"API_PORT={api}".encode() in Path(f"/proc/{p}/environ").read_bytes())
    limits = Path(f"/proc/{pid}/limits").read_text()
    soft, hard = next(line.split()[3:5] for line in limits.splitlines()
                      if line.startswith("Max open files"))
    assert soft == hard


@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_hostile_clients_leave_a_normal_client_served_and_the_api_memory_flat(
    tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shopctl", "bench", "--abuse", "--abuse-slow", "300",
         "--abuse-uploads", "2", "--abuse-upload-mb", "100", "--abuse-flood", "2000",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=230, env=os.environ | {"API_HEADER_TIMEOUT_S": "2"})
    assert result.returncode == 0, result.stdout + result.stderr
    found = json.loads((tmp_path / "abuse.json").read_text())["abuse"]
    assert found["slow"]["closed_by_api"] == 300  # every slowloris cut off
    assert not found["slow"]["failures"] and not found["uploads"]["failures"]
    assert found["slow"]["latency_ms"]["healthz"] and found["uploads"]["latency_ms"]["order"]
    assert [u["status"].split()[1] for u in found["uploads"]["uploads"]] == ["413"] * 4
    quiet = found["quiet"]["peak_rss_mb"]
    assert found["uploads"]["peak_rss_mb"] < quiet + 50  # not 100 MB per upload
