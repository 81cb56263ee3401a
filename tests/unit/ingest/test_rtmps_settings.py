"""The RTMPS URL encoders are given, and TLS options that only work as a pair."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_sync.settings import Settings, SettingsError

FILES = {"tls_cert": Path("/etc/ss/cert.pem"), "tls_key": Path("/etc/ss/key.pem")}


@pytest.mark.parametrize(
    ("values", "url"),
    [
        ({}, None),  # no certificate: no RTMPS
        (FILES, "rtmps://127.0.0.1:1936/live"),
        ({**FILES, "host": "0.0.0.0", "rtmps_port": 443}, "rtmps://localhost/live"),
        (
            {**FILES, "public_url": "rtmp://ingest.example.com/live"},
            "rtmps://ingest.example.com:1936/live",
        ),
        (
            {**FILES, "public_url": "rtmps://tls.example.com:8443/live"},
            "rtmps://tls.example.com:8443/live",
        ),
    ],
)
def test_the_rtmps_url(values: dict[str, object], url: str | None) -> None:
    settings = Settings(**values)  # type: ignore[arg-type]
    assert settings.public_rtmps_url() == url
    settings.check_tls()


def test_a_certificate_without_its_key_is_one_clear_line() -> None:
    with pytest.raises(SettingsError, match="--tls-cert needs --tls-key"):
        Settings(tls_cert=Path("/etc/ss/cert.pem")).check_tls()
    with pytest.raises(SettingsError, match="--tls-key needs --tls-cert"):
        Settings(tls_key=Path("/etc/ss/key.pem")).check_tls()
