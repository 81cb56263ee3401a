"""Push target URLs: parsed once at start; a bad one is one line that never shows its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_sync.ingest.relay import PushTarget
from stream_sync.settings import SettingsError, load_settings

KEY = "live_123456789_abcdefghijklmnopqrstuvwxyz"


def test_a_target_names_host_port_app_and_stream(tmp_path: Path) -> None:
    settings = load_settings(
        data_dir=tmp_path,
        push_targets=f"rtmp://a.example/live/{KEY}, rtmp://[2001:db8::5]:1940/app/in/{{channel}}",
    )
    first, second = settings.push_target_list()
    assert first == PushTarget("a.example", 1935, "live", KEY)
    assert (second.host, second.port, second.app) == ("2001:db8::5", 1940, "app/in")
    assert second.stream_for("studio") == "studio"
    assert KEY not in first.where  # what logs show: rtmp://a.example:1935/live
    assert first.where == "rtmp://a.example:1935/live"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (f"http://a.example/live/{KEY}", "must be an rtmp:// URL"),
        (f"rtmp:///live/{KEY}", "needs a host"),
        (f"rtmp://a.example:99999/live/{KEY}", "bad port"),
        ("rtmp://a.example/live", "needs an app and a stream name"),
    ],
)
def test_a_bad_target_is_one_line_without_its_key(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        load_settings(data_dir=tmp_path, push_targets=url)
    assert "PUSH_TARGETS" in str(raised.value)
    assert KEY not in str(raised.value)
