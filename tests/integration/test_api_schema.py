"""Property-based run over the whole HTTP API (schemathesis): no input makes it answer 500.

The API runs as a real `stream-sync serve` process, signed in with an admin's API
token, so generated requests reach every route, not just the 401 in front of it.
"""

from __future__ import annotations

import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

PASSWORD = "schema fuzzing passphrase"


def _wait_for_line(proc: subprocess.Popen[bytes], pattern: str, timeout: float) -> re.Match[bytes]:
    assert proc.stderr is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stderr, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    regex = re.compile(pattern.encode())
    while (left := deadline - time.monotonic()) > 0:
        if selector.select(left):
            line = proc.stderr.readline()
            if not line:
                break
            if match := regex.search(line):
                return match
    raise AssertionError(f"the server never logged {pattern!r}")


@pytest.fixture(scope="module")
def live_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(base URL, admin API token) of a running server."""
    data = tmp_path_factory.mktemp("schema") / "data"
    cli = [sys.executable, "-m", "stream_sync"]
    subprocess.run(
        [
            *cli,
            "users",
            "create",
            "admin@example.com",
            "--admin",
            "--password-stdin",
            "--data-dir",
            str(data),
        ],
        input=f"{PASSWORD}\n".encode(),
        check=True,
        capture_output=True,
    )
    proc = subprocess.Popen(
        [*cli, "serve", "--data-dir", str(data), "--rtmp-port", "0", "--http-port", "0"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        base = _wait_for_line(proc, r"HTTP listening on (\S+)", 30).group(1).decode()
        with httpx.Client(base_url=base) as client:
            login = client.post(
                "/api/auth/login", json={"email": "admin@example.com", "password": PASSWORD}
            )
            client.headers["X-CSRF-Token"] = login.json()["csrf_token"]
            token = client.post("/api/me/tokens", json={"name": "schemathesis"}).json()["token"]
            client.post("/api/channels", json={"name": "fuzzed"})
        yield base, token
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # its log, for the leak scan


def test_no_input_makes_the_api_fail(live_api: tuple[str, str]) -> None:
    """Every operation, with generated valid and invalid input, answers something but 5xx."""
    base, token = live_api
    schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 20
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call(headers=headers)
            case.validate_response(response, checks=(not_a_server_error,))

        run()


def test_the_schema_is_served(live_api: tuple[str, str], tmp_path: Path) -> None:
    base, _ = live_api
    schema_doc = httpx.get(f"{base}/api/openapi.json").json()
    paths = set(schema_doc["paths"])
    for expected in (
        "/api/auth/login",
        "/api/auth/logout",
        "/api/me",
        "/api/channels",
        "/api/channels/{channel_ref}",
        "/api/channels/{channel_ref}/key/reveal",
        "/api/channels/{channel_ref}/key/reset",
        "/api/channels/{channel_ref}/key/rotate",
        "/api/channels/{channel_ref}/sessions",
        "/api/channels/{channel_ref}/audit",
        "/api/users",
        "/api/ingest-servers",
        "/healthz",
        "/readyz",
    ):
        assert expected in paths
