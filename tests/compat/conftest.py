"""The compatibility suite: each test publishes with one real client and records a row.

When every test of this folder has run (none deselected, none skipped), the rows become
docs/compatibility.md: the table is what the run saw, never written by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from stream_sync.node import Node
from tests.compat.report import Report, Row
from tests.integration.conftest import bus, channel, node_settings, running_node
from tests.support import write_certificate

__all__ = ["bus", "channel"]  # the integration fixtures, on this folder's node

FOLDER = Path(__file__).parent
TABLE = FOLDER.parents[1] / "docs" / "compatibility.md"
_report = Report()


def _ours(item: pytest.Item) -> bool:
    return Path(str(item.path)).is_relative_to(FOLDER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    ours = [item for item in items if _ours(item)]
    _report.expected = {item.nodeid for item in ours}
    _report.files = {Path(str(item.path)).name for item in ours}
    _report.all_files = {path.name for path in FOLDER.glob("test_*.py")}


def pytest_deselected(items: list[pytest.Item]) -> None:
    _report.deselected |= {item.nodeid for item in items if _ours(item)}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report: pytest.TestReport = yield
    if _ours(item):
        _report.outcome(item.nodeid, report)
    return report  # type: ignore[return-value]


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _report.complete():
        TABLE.write_text(_report.render())


@pytest.fixture
def row(request: pytest.FixtureRequest) -> Row:
    """This test's line of the table; the test fills in what it saw."""
    return _report.row(request.node.nodeid)


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    """A node with RTMP and RTMPS (a certificate for DNS:localhost) on free ports."""
    cert, key = write_certificate(tmp_path / "tls")
    settings = node_settings(
        tmp_path / "data", rtmps_port=0, tls_cert=cert, tls_key=key, idle_timeout=10.0
    )
    async with running_node(settings) as running:
        yield running


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    return tmp_path / "tls" / "cert.pem"
