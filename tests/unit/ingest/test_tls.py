"""The RTMPS context: TLS 1.2 at least, and files that do not load said in one line."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from stream_sync.ingest import tls
from tests.support import write_certificate


def test_the_context_speaks_tls_1_2_and_later_only(tmp_path: Path) -> None:
    cert, key = write_certificate(tmp_path)
    context = tls.server_context(cert, key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_RENEGOTIATION


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    cert, _ = write_certificate(tmp_path)
    with pytest.raises(tls.TlsError, match=r"cannot read .*nope\.pem: No such file"):
        tls.server_context(cert, tmp_path / "nope.pem")


def test_a_key_of_another_certificate_is_refused(tmp_path: Path) -> None:
    cert, _ = write_certificate(tmp_path / "a")
    _, other_key = write_certificate(tmp_path / "b")
    with pytest.raises(tls.TlsError) as refused:
        tls.server_context(cert, other_key)
    assert "do not load" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_a_file_that_is_not_pem_is_refused(tmp_path: Path) -> None:
    _, key = write_certificate(tmp_path)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(tls.TlsError, match="both must be PEM"):
        tls.server_context(garbage, key)
