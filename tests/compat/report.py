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
