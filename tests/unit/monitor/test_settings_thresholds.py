"""Health thresholds come from the environment, and bad values are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_sync.monitor.health import HealthThresholds
from stream_sync.settings import SettingsError, load_settings


def test_thresholds_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STREAM_SYNC_MAX_KEYFRAME_INTERVAL", "2.5")
    monkeypatch.setenv("STREAM_SYNC_MAX_FPS_SPREAD", "0.35")
    monkeypatch.setenv("STREAM_SYNC_NO_AUDIO_AFTER", "0")
    monkeypatch.setenv("STREAM_SYNC_FALLING_BEHIND_DRIFT", "6")
    monkeypatch.setenv("STREAM_SYNC_ALLOWED_VIDEO_CODECS", "avc1, hvc1")

    thresholds = load_settings(data_dir=tmp_path).health_thresholds()

    assert thresholds.max_keyframe_interval == 2.5
    assert thresholds.max_fps_spread == 0.35
    assert thresholds.no_audio_after is None  # 0 turns the rule off
    assert thresholds.no_video_after == HealthThresholds().no_video_after
    assert thresholds.falling_behind_drift == 6
    assert thresholds.allowed_video_codecs == {"avc1", "hvc1"}
    assert thresholds.allowed_audio_codecs == HealthThresholds().allowed_audio_codecs


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("STREAM_SYNC_MAX_KEYFRAME_INTERVAL", "0"),
        ("STREAM_SYNC_MAX_FPS_SPREAD", "2"),
        ("STREAM_SYNC_NO_AUDIO_AFTER", "-1"),
        ("STREAM_SYNC_GRACE_PERIOD", "soon"),
    ],
)
def test_bad_threshold_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings(data_dir=tmp_path)
