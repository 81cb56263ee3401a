"""Push target URLs: parsed once at start; a bad one is one line that never shows its key."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from stream_sync.ingest.relay import Push
from stream_sync.outputs.destinations import PushTarget
from stream_sync.settings import SettingsError, load_settings
from tests.support import free_port

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
        (f"http://a.example/live/{KEY}", r"is rtmp://host\[:port\]/app or rtmps://"),
        (f"rtmp:///live/{KEY}", r"is rtmp://host\[:port\]/app or rtmps://"),
        (f"rtmp://a.example:99999/live/{KEY}", "port is not a number from 1 to 65535"),
        (f"rtmp://user:pw@a.example/live/{KEY}", "no user name or password"),
        ("rtmp://a.example/live", "needs an app and a stream name"),
    ],
)
def test_a_bad_target_is_one_line_without_its_key(tmp_path: Path, url: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as raised:
        load_settings(data_dir=tmp_path, push_targets=url)
    assert "PUSH_TARGETS" in str(raised.value)
    assert KEY not in str(raised.value)


async def test_a_push_that_falls_behind_skips_to_the_next_keyframe() -> None:
    """The queue holds 2 s of media at most; past it, everything up to a keyframe goes."""
    source = SimpleNamespace(id="c1", metadata={}, video_sequence=None, audio_sequence=None)
    push = Push(PushTarget("127.0.0.1", free_port(), "live", "x"), "studio")
    push.source = source  # type: ignore[assignment]  # attached, never started: as if the
    # target stopped reading
    key, frame, sound = b"\x17\x01" + bytes(100), b"\x27\x01" + bytes(100), b"\xaf\x01" + bytes(10)
    push.media(9, 0, key, keyframe=True)  # not live yet: nothing is queued
    assert push.queued() == (0, 0)
    push.state = "live"
    push.media(9, 0, frame, keyframe=False)  # a new connection starts with a picture
    assert push.queued() == (0, 0)
    for ms in range(0, 2001, 40):  # two seconds of video and audio, from a keyframe
        push.media(9, ms, key if ms == 0 else frame, keyframe=ms == 0)
        push.media(8, ms, sound, keyframe=False)
    assert push.queued()[0] == 2 * 51
    push.media(9, 2040, frame, keyframe=False)  # 2.04 s after the head: too far behind
    assert (push.queued(), push.dropped) == ((0, 0), 1)
    push.media(9, 2080, frame, keyframe=False)  # waits for a keyframe
    push.media(8, 2080, b"\xaf\x00\x12\x10", keyframe=False)  # codec records always pass
    push.media(9, 2120, key, keyframe=True)
    assert push.queued() == (2, 4 + len(key))
