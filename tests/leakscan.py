"""The leak scan: no secret the suite issues appears in anything stream-sync writes.

Issue 9 asks that stream keys, API and reset tokens and passwords never leak. This
plugin records every secret the run issues and looks for it in every sink:

- log records of every logger, as the production handler writes them (through
  `logs.RedactKeys`), at the production levels plus stream_sync's DEBUG lines;
- the standard error of `stream-sync` child processes (their standard output is the
  operator's answer, where a new key belongs: it is read for secrets, not scanned);
- the body of every HTTP error response and of /metrics that an httpx or requests
  client of the tests receives;
- every event published on a bus or staged in the outbox, every audit row inserted.

Webhook signing secrets count as secrets too: generated ones where they are made,
and any of that shape (``whsec_`` and 43 base62 characters) a response hands out.

Secrets are registered where they are made (`GeneratedKey`, `random_base62` for
tokens, `hash_password`) and where a child process or a server hands them out
(keys and tokens in a CLI's output or a successful response, a `--password-stdin`,
a password a test sends in JSON or a form). Texts wait until the test's teardown, then
are scanned against every secret known by then and dropped: a line written before
its secret was registered is still caught, and memory holds about one test's output.

A 20-character run of a secret (43 base62 characters) is a leak: a truncated key is
still most of a key. So is key-shaped text (`ssk_<id>_` and 20 or more base62
characters) whose secret nobody registered: child processes issue keys the tests
never see. A leak fails the test's teardown, naming the sink; secrets are masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import re
import subprocess
import threading
import unicodedata
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from sqlalchemy import event as orm_event

from stream_sync import logs
from stream_sync.accounts import api_tokens, passwords, users
from stream_sync.admin.client import AdminSocketBus
from stream_sync.credentials.keys import GeneratedKey, mask_key
from stream_sync.db.models import AuditEntry
from stream_sync.state import outbox
from stream_sync.state.codec import encode_event
from stream_sync.state.inprocess import InProcessBus
from stream_sync.state.interfaces import BusEvent, StreamStats
from stream_sync.state.redis import RedisBus
from stream_sync.webhooks import endpoints

WINDOW = 20  # base62 characters of a secret that count as a leak
SECRET_LENGTH = 43  # of keys, API tokens and reset tokens alike
PASSWORD_MIN = 8  # unit tests hash shorter strings that would match everywhere
FLUSH_CHARACTERS = 8 << 20  # a test that writes more is scanned before its teardown
_LINE_MAX = 1 << 16  # a pipe's unterminated line is scanned once this long
# Test-side HTTP clients: their INFO lines are the tests' requests, not stream-sync's.
_CLIENT_LOGGERS = ("httpx", "httpcore")

_BASE62_RUN = re.compile(rf"[0-9A-Za-z]{{{WINDOW},}}")
_KEY_SHAPED = re.compile(
    rf"(?:ssk|sst)_[0-9A-Za-z]{{12}}_[0-9A-Za-z]{{{WINDOW},}}|ssr_[0-9A-Za-z]{{{WINDOW},}}"
)
_ISSUED = re.compile(
    r"(?:ssk|sst)_[0-9A-Za-z]{12}_[0-9A-Za-z]{43}|ssr_[0-9A-Za-z]{43}|whsec_[0-9A-Za-z]{43}"
)


def label_of(token: str) -> str:
    """A secret as the report shows it: never enough to use it."""
    if token.startswith("ssk_"):
        return mask_key(token)
    if token.startswith("sst_"):
        return api_tokens.mask_token(token)
    if token.startswith("whsec_"):
        return "whsec_*** (a webhook signing secret)"
    return "ssr_*** (a reset token)"


@dataclass(frozen=True, slots=True)
class Hit:
    start: int
    end: int
    label: str


@dataclass
class Secrets:
    """Every secret issued so far: base62 secrets by their 20-character runs, passwords whole.

    Looking up each run of a text in one dict costs the same however many secrets
    the suite has issued.
    """

    runs: dict[str, str] = field(default_factory=dict)
    passwords: dict[str, str] = field(default_factory=dict)
    issued: int = 0

    def add_secret(self, secret: str, label: str) -> None:
        if secret[:WINDOW] in self.runs:
            return
        self.issued += 1
        for start in range(len(secret) - WINDOW + 1):
            self.runs.setdefault(secret[start : start + WINDOW], label)

    def add_issued(self, text: str) -> None:
        """Keys and tokens handed out in ``text`` (a CLI's answer, a successful response)."""
        for match in _ISSUED.finditer(text):
            token = match.group()
            self.add_secret(token[-SECRET_LENGTH:], label_of(token))

    def add_password(self, password: str) -> None:
        for form in (password, unicodedata.normalize("NFKC", password)):
            if len(form) >= PASSWORD_MIN and form not in self.passwords:
                self.issued += 1
                self.passwords[form] = f"a password of {len(form)} characters"

    def find(self, text: str) -> list[Hit]:
        hits: list[Hit] = []
        for run in _BASE62_RUN.finditer(text):
            chars = run.group()
            for start in range(len(chars) - WINDOW + 1):
                if label := self.runs.get(chars[start : start + WINDOW]):
                    hits.append(Hit(run.start(), run.end(), label))
                    break
        for shaped in _KEY_SHAPED.finditer(text):
            if not any(hit.start < shaped.end() and shaped.start() < hit.end for hit in hits):
                prefix = shaped.group()[: 4 if shaped.group().startswith("ssr_") else 17]
                label = f"{prefix}*** (key-shaped, issued where the tests did not see it)"
                hits.append(Hit(shaped.start(), shaped.end(), label))
        for password, label in self.passwords.items():
            start = text.find(password)
            while start != -1:
                hits.append(Hit(start, start + len(password), label))
                start = text.find(password, start + 1)
        return sorted(hits, key=lambda hit: hit.start)

    def mask(self, text: str) -> str:
        """``text`` with every secret replaced by its label."""
        masked, end = [], 0
        for hit in self.find(text):
            if hit.start >= end:
                masked += [text[end : hit.start], f"<{hit.label}>"]
                end = hit.end
        return "".join([*masked, text[end:]])


@dataclass(frozen=True, slots=True)
class Leak:
    sink: str
    test: str
    secret: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.secret} in {self.sink} (test {self.test}):\n    {self.excerpt}"


class LeakScan:
    """Texts of the sinks, held until scanned against the secrets; the leaks found."""

    def __init__(self) -> None:
        self.secrets = Secrets()
        self.test = "(before the first test)"
        self.texts: Counter[str] = Counter()  # by the sink's kind: log, stderr, HTTP, ...
        self.characters = 0
        self.leaks: list[Leak] = []
        self.after_the_tests: list[Leak] = []
        self._pending: list[tuple[str, str, str]] = []
        self._pending_size = 0
        self._found: list[Leak] = []
        self._lock = threading.Lock()

    def collect(self, sink: str, text: str) -> None:
        if not text:
            return
        with self._lock:
            self._pending.append((sink, self.test, text))
            self._pending_size += len(text)
            self.texts[sink.partition(" ")[0]] += 1
            self.characters += len(text)
            if self._pending_size > FLUSH_CHARACTERS:
                self._found += self._scan_pending()

    def take(self) -> list[Leak]:
        """The leaks in what was collected since the last call."""
        with self._lock:
            found = self._found + self._scan_pending()
            self._found = []
        self.leaks += found
        return found

    def _scan_pending(self) -> list[Leak]:
        pending, self._pending, self._pending_size = self._pending, [], 0
        found: list[Leak] = []
        for sink, test, text in pending:
            for hit in self.secrets.find(text):
                found.append(
                    Leak(self.secrets.mask(sink), test, hit.label, self._excerpt(text, hit))
                )
        return found

    def _excerpt(self, text: str, hit: Hit) -> str:
        around = text[max(0, hit.start - 100) : hit.end + 100]
        return self.secrets.mask(around).strip().replace("\n", " | ")

    # --- secrets ----------------------------------------------------------------------

    def harvest_request(self, content: bytes, content_type: str) -> None:
        """Passwords a test sends to a server (which may be another process)."""
        fields: Sequence[tuple[str, Any]] = ()
        try:
            if "json" in content_type and content.startswith(b"{"):
                fields = list(json.loads(content).items())
            elif "form-urlencoded" in content_type:
                fields = parse_qsl(content.decode())
        except ValueError:
            return
        for name, value in fields:
            if "password" in name and isinstance(value, str):
                self.secrets.add_password(value)

    def http_response(self, method: str, path: str, status: int, body: str) -> None:
        """Error bodies and /metrics are scanned; others may hand out a key or token."""
        if status >= 400 or path.endswith("/metrics"):
            self.collect(f"HTTP {status} {method} {path}", body)
        else:
            self.secrets.add_issued(body)


class Lines:
    """A pipe's bytes cut into whole lines, so that no secret is split between two texts."""

    def __init__(self, consume: Callable[[str], None]) -> None:
        self._consume = consume
        self._rest = b""

    def feed(self, data: bytes) -> None:
        data = self._rest + data
        cut = data.rfind(b"\n") + 1
        if not cut and len(data) > _LINE_MAX:
            cut = len(data)  # no end of line in sight: scan it now, at the risk of a split
        self._rest = data[cut:]
        if cut:
            self._consume(data[:cut].decode(errors="replace"))

    def close(self) -> None:
        rest, self._rest = self._rest, b""
        if rest:
            self._consume(rest.decode(errors="replace"))


def stream_sync_command(args: Sequence[object]) -> str | None:
    """``stream-sync <command>`` if ``args`` run stream-sync, else None."""
    words = [str(arg) for arg in args]
    if words and words[0].endswith("stream-sync"):
        rest = words[1:]
    elif "stream_sync" in words and words.index("stream_sync") > 0:
        at = words.index("stream_sync")
        if words[at - 1] != "-m":
            return None
        rest = words[at + 1 :]
    else:
        return None
    command = list(itertools.takewhile(lambda word: not word.startswith("-"), rest))[:2]
    return " ".join(["stream-sync", *command])


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


def _first_line(data: bytes | str | None) -> str:
    lines = _text(data).splitlines()
    return lines[0] if lines else ""


def tee_process(scan: LeakScan, proc: asyncio.subprocess.Process, command: str) -> None:
    """A child's stderr goes to the scan, its stdout (the operator's answer) to the secrets."""
    _tee(proc.stderr, lambda text: scan.collect(f"stderr of `{command}`", text))
    _tee(proc.stdout, scan.secrets.add_issued)


def _tee(reader: asyncio.StreamReader | None, consume: Callable[[str], None]) -> None:
    """Also hand what the child writes to ``consume``, whether or not the test reads it."""
    if reader is None:
        return
    lines = Lines(consume)
    feed_data, feed_eof = reader.feed_data, reader.feed_eof

    def tee_data(data: Any) -> None:
        feed_data(data)
        lines.feed(bytes(data))

    def tee_eof() -> None:
        lines.close()
        feed_eof()

    reader.feed_data = tee_data  # type: ignore[method-assign]
    reader.feed_eof = tee_eof  # type: ignore[method-assign]


class LogSink(logging.Handler):
    """Every log record, as the production handler writes it: redacted, then formatted."""

    def __init__(self, scan: LeakScan) -> None:
        super().__init__(logging.DEBUG)
        self.scan = scan
        self.redact = logs.RedactKeys()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.partition(".")[0] in _CLIENT_LOGGERS:
            return
        written = logging.makeLogRecord(record.__dict__)  # other handlers see the original
        written.exc_text = None  # a traceback another handler formatted, unredacted
        self.redact.filter(written)
        self.scan.collect(f"log {record.name}", self.format(written))


def install(scan: LeakScan, patch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Every hook of the scan; returns what undoes the parts MonkeyPatch does not."""
    secrets = scan.secrets

    # Secrets, where they are made.
    make_key = GeneratedKey.__init__

    def registered_key(self: GeneratedKey, key_id: str, key: str) -> None:
        make_key(self, key_id=key_id, key=key)
        secrets.add_secret(key[-SECRET_LENGTH:], label_of(key))

    patch.setattr(GeneratedKey, "__init__", registered_key)
    random_base62 = users.random_base62

    def registered_token(length: int) -> str:
        secret = random_base62(length)
        if length >= SECRET_LENGTH:
            secrets.add_secret(secret, "an API or reset token")
        return secret

    for module in (users, api_tokens):
        patch.setattr(module, "random_base62", registered_token)
    hash_password = passwords.hash_password

    def registered_password(password: str) -> str:
        secrets.add_password(password)
        return hash_password(password)

    patch.setattr(passwords, "hash_password", registered_password)
    new_webhook_secret = endpoints.new_secret

    def registered_webhook_secret() -> str:
        secret = new_webhook_secret()
        secrets.add_secret(secret[-SECRET_LENGTH:], label_of(secret))
        return secret

    patch.setattr(endpoints, "new_secret", registered_webhook_secret)

    # Logs, at the levels a server runs at; stream_sync's DEBUG lines too.
    sink = LogSink(scan)
    names = ("", "stream_sync", *logs.QUIET_LOGGERS, *_CLIENT_LOGGERS)
    levels = {name: logging.getLogger(name).level for name in names}
    logs.set_levels("info")
    logging.getLogger("stream_sync").setLevel(logging.DEBUG)
    for name in _CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger().addHandler(sink)

    # stream-sync child processes.
    create = asyncio.create_subprocess_exec

    async def watched(*args: Any, **kwargs: Any) -> asyncio.subprocess.Process:
        proc = await create(*args, **kwargs)
        if (command := stream_sync_command(args)) is None:
            return proc
        tee_process(scan, proc, command)
        if "--password-stdin" in args:
            communicate = proc.communicate

            async def with_password(input: Any = None) -> tuple[bytes, bytes]:
                secrets.add_password(_first_line(input))
                return await communicate(input)

            proc.communicate = with_password  # type: ignore[method-assign]
        return proc

    patch.setattr(asyncio, "create_subprocess_exec", watched)
    patch.setattr(subprocess, "Popen", _popen_class(scan))

    # HTTP clients of the tests.
    async_send, sync_send = httpx.AsyncClient.send, httpx.Client.send

    def seen(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        with contextlib.suppress(httpx.RequestNotRead):  # a streamed request body
            scan.harvest_request(request.content, request.headers.get("content-type", ""))
        try:
            body = response.text
        except httpx.ResponseNotRead:
            return response  # a streamed body: the test reads it, we don't
        scan.http_response(request.method, request.url.path, response.status_code, body)
        return response

    async def async_sent(
        self: httpx.AsyncClient, request: httpx.Request, **kw: Any
    ) -> httpx.Response:
        return seen(request, await async_send(self, request, **kw))

    def sync_sent(self: httpx.Client, request: httpx.Request, **kw: Any) -> httpx.Response:
        return seen(request, sync_send(self, request, **kw))

    patch.setattr(httpx.AsyncClient, "send", async_sent)
    patch.setattr(httpx.Client, "send", sync_sent)
    _patch_requests(scan, patch)

    # Bus events, the outbox, audit rows.
    for bus in (InProcessBus, RedisBus, AdminSocketBus):
        patch.setattr(bus, "publish", _traced_publish(scan, bus.publish))
        patch.setattr(bus, "publish_stats", _traced_stats(scan, bus.publish_stats))
    make_row = outbox._row

    def traced_row(event: BusEvent, *args: Any) -> dict[str, Any]:
        row = make_row(event, *args)
        scan.collect(f"outbox row {row['type']}", json.dumps(row["payload"], default=str))
        return row

    patch.setattr(outbox, "_row", traced_row)

    def audited(mapper: Any, connection: Any, entry: AuditEntry) -> None:
        row = {
            "actor": entry.actor,
            "key_id": entry.key_id,
            "source_address": entry.source_address,
            "details": entry.details,
        }
        scan.collect(f"audit row {entry.action}", json.dumps(row, default=str))

    orm_event.listen(AuditEntry, "before_insert", audited)

    def undo() -> None:
        orm_event.remove(AuditEntry, "before_insert", audited)
        logging.getLogger().removeHandler(sink)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)

    return undo


def _popen_class(scan: LeakScan) -> type[subprocess.Popen[Any]]:
    class ScannedPopen(subprocess.Popen[Any]):
        """`subprocess.run` of stream-sync: its answer read for secrets, its stderr scanned."""

        def communicate(self, input: Any = None, timeout: float | None = None) -> Any:
            args = self.args if isinstance(self.args, list | tuple) else []
            command = stream_sync_command(args)
            if command is not None and "--password-stdin" in args:
                scan.secrets.add_password(_first_line(input))
            out, err = super().communicate(input, timeout)
            if command is not None:
                scan.secrets.add_issued(_text(out))
                scan.collect(f"stderr of `{command}`", _text(err))
            return out, err

    return ScannedPopen


def _patch_requests(scan: LeakScan, patch: pytest.MonkeyPatch) -> None:
    """Schemathesis calls the API through requests.

    Its passwords are not harvested: they are fuzz, often constants of our own source
    (Hypothesis draws on them) that then turn up everywhere, as field names.
    """
    try:
        import requests
    except ImportError:
        return
    send = requests.Session.send

    def sent(self: requests.Session, request: requests.PreparedRequest, **kw: Any) -> Any:
        response = send(self, request, **kw)
        # Schemathesis always streams; reading the body first is the same to requests,
        # except for an event stream, which may never end.
        if "event-stream" not in response.headers.get("Content-Type", ""):
            path = httpx.URL(request.url or "").path
            scan.http_response(request.method or "", path, response.status_code, response.text)
        return response

    patch.setattr(requests.Session, "send", sent)


def _payload(event: BusEvent) -> str:
    return json.dumps(encode_event(event), default=str)


def _traced_publish(
    scan: LeakScan, publish: Callable[[Any, BusEvent], Coroutine[Any, Any, None]]
) -> Callable[[Any, BusEvent], Coroutine[Any, Any, None]]:
    async def traced(self: Any, event: BusEvent) -> None:
        scan.collect(f"bus event {type(event).__name__}", _payload(event))
        await publish(self, event)

    return traced


def _traced_stats(
    scan: LeakScan, publish: Callable[[Any, Sequence[StreamStats]], Coroutine[Any, Any, None]]
) -> Callable[[Any, Sequence[StreamStats]], Coroutine[Any, Any, None]]:
    async def traced(self: Any, batch: Sequence[StreamStats]) -> None:
        for stats in batch:
            scan.collect("bus event StreamStats", _payload(stats))
        await publish(self, batch)

    return traced


# --- pytest hooks ---------------------------------------------------------------------------

_SCAN = pytest.StashKey[LeakScan]()
_UNDO = pytest.StashKey[Callable[[], None]]()


def pytest_configure(config: pytest.Config) -> None:
    scan = LeakScan()
    patch = pytest.MonkeyPatch()
    undo = install(scan, patch)
    config.stash[_SCAN] = scan

    def undo_all() -> None:
        undo()
        patch.undo()

    config.stash[_UNDO] = undo_all


def pytest_unconfigure(config: pytest.Config) -> None:
    if _UNDO in config.stash:
        config.stash[_UNDO]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    scan = item.config.stash[_SCAN]
    scan.test = item.nodeid
    try:
        return (yield)
    finally:
        scan.test = f"after {item.nodeid}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report: pytest.TestReport = yield
    scan = item.config.stash[_SCAN]
    leaks = scan.take() if call.when == "teardown" else []
    if leaks:
        report.outcome = "failed"
        report.longrepr = "\n".join(
            [f"secret leak: {len(leaks)} secret(s) in what stream-sync wrote", *map(str, leaks)]
        )
    if report.failed:  # pytest prints its captured log: the raw records, before redaction
        report.sections = [(title, scan.secrets.mask(text)) for title, text in report.sections]
    return report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    scan = session.config.stash[_SCAN]
    scan.after_the_tests = scan.take()  # written by session fixtures' teardown
    if scan.after_the_tests and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    scan = config.stash[_SCAN]
    if scan.after_the_tests:
        terminalreporter.section("secret leaks after the last test", red=True)
        for leak in scan.after_the_tests:
            terminalreporter.line(str(leak))
    verdict = f"{len(scan.leaks)} LEAK(S)" if scan.leaks else "no leak"
    kinds = "".join(f"{kind} {count}, " for kind, count in scan.texts.most_common())
    terminalreporter.line(
        f"leak scan: {scan.texts.total()} texts ({kinds}{scan.characters / 1e6:.1f} M "
        f"characters), {scan.secrets.issued} secrets: {verdict}"
    )
