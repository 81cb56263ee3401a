"""The leak scan finds what it must and nothing else: inner pytest runs, and its parts."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from stream_sync.credentials.keys import generate_key
from tests.leakscan import LeakScan, Lines, Secrets, stream_sync_command, tee_process

ROOT = Path(__file__).resolve().parent.parent

LEAKY = """
import logging
from pathlib import Path

import httpx

from stream_sync.credentials.keys import generate_key


def test_the_secret_alone_in_a_log_line() -> None:
    key = generate_key().key
    Path("log-key.txt").write_text(key)
    # The redaction filter looks for "ssk_": the secret without it passes through.
    logging.getLogger("stream_sync.demo").warning("secret part %s", key[17:])


async def test_a_key_cut_short_in_an_error_response() -> None:
    key = generate_key().key
    Path("http-key.txt").write_text(key)
    transport = httpx.MockTransport(lambda request: httpx.Response(404, text=key[:40]))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        await client.get("/api/channels/x")


def test_a_quiet_test_passes() -> None:
    pass
"""

CLEAN = """
import logging

import httpx

from stream_sync.credentials.keys import generate_key, mask_key


def test_redacted_keys_pass() -> None:
    key = generate_key().key
    logging.getLogger("stream_sync.demo").warning("rtmp://host/live/%s (%s)", key, mask_key(key))
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text=key))
    with httpx.Client(transport=transport, base_url="http://test") as client:
        assert client.get("/api/channels/x/key").text == key  # the reveal: not a sink
"""


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A separate pytest process with the leak scan: this run's scan must not see its output."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makeini(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    return pytester


def test_a_leak_fails_the_run_naming_the_sink_and_the_test(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_leaky=LEAKY)
    result = inner.runpytest_subprocess("-p", "tests.leakscan", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3, errors=2)
    output = result.stdout.str() + result.stderr.str()
    for name, sink, test in [
        ("log-key.txt", "log stream_sync.demo", "test_the_secret_alone_in_a_log_line"),
        ("http-key.txt", "HTTP 404 GET /api/channels/x", "test_a_key_cut_short_in_an"),
    ]:
        key = (inner.path / name).read_text()
        assert f"ssk_{key[4:16]}_…{key[-4:]} in {sink} (test test_leaky.py::{test}" in output
        assert key[17:37] not in output  # masked, in the report and in the captured log
    result.stdout.fnmatch_lines(["*leak scan: * 2 LEAK(S)"])


def test_redacted_output_passes(inner: pytest.Pytester) -> None:
    inner.makepyfile(test_clean=CLEAN)
    result = inner.runpytest_subprocess("-p", "tests.leakscan", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*leak scan: * secrets: no leak"])


def test_secrets_are_found_by_any_20_characters_and_passwords_whole() -> None:
    key = generate_key().key
    secrets = Secrets()
    secrets.add_issued(f"Stream key: {key}\n")
    secrets.add_password("correct horse battery staple")
    assert [hit.label for hit in secrets.find(f"x{key[30:50]}y")] == [
        f"ssk_{key[4:16]}_…{key[-4:]}"
    ]
    assert secrets.find(key[17:36]) == []  # 19 characters: not enough to count
    assert secrets.mask("pw=correct horse battery staple!") == "pw=<a password of 28 characters>!"
    stranger = f"ssk_{'A' * 12}_{'b' * 25}"
    assert "key-shaped" in secrets.mask(f"app {stranger}")
    assert secrets.find(f"ssk_{'A' * 12}_*** and ssk_{'A' * 12}_…{key[-4:]}") == []


def test_pipe_lines_are_whole_however_the_bytes_arrive() -> None:
    texts: list[str] = []
    lines = Lines(texts.append)
    for chunk in (b"one ss", b"k_key\ntwo", b" and", b" three\nfour"):
        lines.feed(chunk)
    lines.close()
    assert texts == ["one ssk_key\n", "two and three\n", "four"]


def test_stream_sync_children_are_told_apart() -> None:
    python = sys.executable
    assert stream_sync_command([python, "-m", "stream_sync", "serve", "--data-dir", "d"]) == (
        "stream-sync serve"
    )
    assert stream_sync_command(["/venv/bin/stream-sync", "users", "create", "a@b.c"]) == (
        "stream-sync users create"
    )
    assert stream_sync_command(["ffmpeg", "-i", "x", "rtmp://h/live/stream_sync"]) is None
    assert stream_sync_command([python, "-m", "pytest"]) is None


async def test_a_childs_stderr_is_scanned_and_its_answer_read_for_keys() -> None:
    key = generate_key().key
    scan = LeakScan()
    script = f"import sys; print('Stream key: {key}'); sys.stderr.write('oops {key[17:]}')"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    tee_process(scan, proc, "stream-sync demo")
    await proc.communicate()
    leaks = scan.take()
    assert [(leak.sink, leak.secret) for leak in leaks] == [
        ("stderr of `stream-sync demo`", f"ssk_{key[4:16]}_…{key[-4:]}")
    ]
