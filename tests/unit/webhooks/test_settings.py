"""Webhook settings: ranges checked by the settings, combinations in one line at start."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from stream_sync.settings import SettingsError, load_settings


def test_the_defaults_are_the_documented_policy(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path)
    policy = settings.webhook_policy()
    assert [policy.delay(n) for n in (1, 2, 9, 10, 50)] == [
        timedelta(seconds=s) for s in (10, 20, 2560, 3600, 3600)
    ]
    assert policy.give_up_after == 86_400
    limits = settings.webhook_limits()
    assert (limits.timeout, limits.total, limits.per_endpoint) == (10, 32, 4)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"webhook_retry_first": 7200, "webhook_retry_max": 60}, "WEBHOOK_RETRY_FIRST"),
        ({"webhook_concurrency": 2, "webhook_endpoint_concurrency": 3}, "ENDPOINT_CONCURRENCY"),
    ],
)
def test_a_combination_that_makes_no_sense_is_one_line(
    tmp_path: Path, values: dict[str, float], message: str
) -> None:
    settings = load_settings(data_dir=tmp_path, **values)

    def check() -> None:
        settings.webhook_policy()
        settings.webhook_limits()

    with pytest.raises(SettingsError, match=message) as raised:
        check()
    assert "\n" not in str(raised.value)


def test_a_value_out_of_range_names_its_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAM_SYNC_WEBHOOK_TIMEOUT", "0")
    with pytest.raises(SettingsError, match="STREAM_SYNC_WEBHOOK_TIMEOUT"):
        load_settings(data_dir=tmp_path)
