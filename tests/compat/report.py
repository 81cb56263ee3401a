"""Rows of docs/compatibility.md, one per test, filled in by the test and its outcome."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

HEADER = """\
# Compatibility

Which encoders publish to stream-sync, and how they hear a refusal. This file is written by
the compatibility suite (`tests/compat`) whenever all of it runs, as in `make test`, from
what each test saw: the client's own version string, the codec the monitor reported, the
time a refused client took to give up. Do not edit it by hand.

- **works**: the client published for the time stated, the node reported the codec in
  the Codec column and the session ended as the client ended it.
- **refused**: the client was refused, exited (or, for OBS, showed its error) and never
  heard `NetStream.Publish.Start` first.
- **not supported by the client**: the client itself cannot send this (its own error is quoted).

What the suite learned about the clients themselves (each is what a test had to allow for):

- The static FFmpeg 7.0 build crashes (SIGSEGV) resolving a host name (static glibc):
  give it an address. Its tests publish to 127.0.0.1; the test certificate names it.
- FFmpeg 8 and later verify an RTMPS server's certificate by default and fail with
  "certificate verify failed" on an unknown one; 5.1 and 7.0 verify only with
  `-tls_verify 1`. Every RTMPS test here verifies, against the test certificate
  (`-ca_file`).
- OBS (mbedTLS) trusts the files in /etc/ssl/certs and matches only DNS names;
  GStreamer's `rtmp2sink` (GnuTLS) trusts the bundle there. Their RTMPS tests run in a
  bubblewrap sandbox where that folder holds only the test certificate.
- FFmpeg 7.0 announces only video FourCCs over Enhanced RTMP: it cannot send Opus.
- GStreamer's `rtmpsink` (librtmp) writes on after a refusal and dies of SIGPIPE,
  without showing the server's reason; the other clients show it.
- OBS does not retry a refused publish; after a stream that was live breaks, it
  reconnects after its retry delay.

| Client | Version | Transport | Codec | Result |
|---|---|---|---|---|
"""


TRANSPORTS = ["RTMP", "RTMPS", "Enhanced RTMP"]


@dataclass
class Row:
    client: str = ""
    version: str = ""
    transport: str = ""
    codec: str = ""
    result: str = "works"

    def describe(self, client: str, version: str, transport: str, codec: str) -> None:
        self.client, self.version, self.transport, self.codec = client, version, transport, codec

    def line(self) -> str:
        cells = (self.client, self.version, self.transport, self.codec, self.result)
        return "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |\n"


@dataclass
class Report:
    expected: set[str] = field(default_factory=set)
    deselected: set[str] = field(default_factory=set)
    rows: dict[str, Row] = field(default_factory=dict)
    passed: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)  # test files collected
    all_files: set[str] = field(default_factory=set)  # test files in the suite

    def row(self, nodeid: str) -> Row:
        return self.rows.setdefault(nodeid, Row())

    def outcome(self, nodeid: str, report: pytest.TestReport) -> None:
        if report.skipped:
            self.skipped.add(nodeid)
        elif report.failed:
            self.failed.add(nodeid)
            row = self.row(nodeid)
            row.result = f"**fails** ({report.when})"
        elif report.when == "call":
            self.passed.add(nodeid)

    def complete(self) -> bool:
        """Every test of the suite ran to an outcome, and each filled in its row."""
        done = self.passed | self.failed
        return (
            bool(self.expected)
            and self.files == self.all_files
            and not self.deselected
            and not self.skipped
            and done == self.expected
            and all(self.rows[nodeid].client for nodeid in done)
        )

    def render(self) -> str:
        ordered = sorted(
            self.rows.values(),
            key=lambda r: (r.client, r.version, TRANSPORTS.index(r.transport), r.codec),
        )
        return HEADER + "".join(row.line() for row in ordered)
