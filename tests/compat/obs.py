"""OBS Studio, headless: a generated profile, Xvfb, and its log as the witness.

OBS keeps everything in ``$XDG_CONFIG_HOME/obs-studio``; a fresh folder per run is the
portable profile: a custom RTMP service (URL and key), a scene with one color source,
x264 and AAC in Simple output mode, automatic reconnection after a short delay.
``--startstreaming`` goes live at once. OBS's TLS (mbedTLS) trusts only the files in
/etc/ssl/certs, so for RTMPS it runs under bubblewrap with that folder replaced by one
holding only the test certificate: the host's store is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from tests.compat.encoders import trusting, version_of
from tests.support import require

PROFILE = "Compat"
SCENES = "Compat"


@dataclass(frozen=True)
class ObsProfile:
    server: str  # e.g. rtmp://localhost:1935/live
    key: str
    width: int = 640
    height: int = 360
    fps: int = 25
    video_kbps: int = 600
    audio_kbps: int = 96
    retry_delay: int = 2  # seconds OBS waits before reconnecting
    max_retries: int = 20


def obs_binaries() -> tuple[str, str]:
    """obs and xvfb-run; under CI their absence is a failure, not a skip."""
    obs, xvfb = shutil.which("obs"), shutil.which("xvfb-run")
    require(obs is not None and xvfb is not None, "OBS Studio and Xvfb (obs-studio, xvfb)")
    assert obs is not None
    assert xvfb is not None
    return obs, xvfb


def obs_version(obs: str) -> str:
    return version_of([obs, "--version"], r"OBS Studio - (\S+)")


def write_config(root: Path, profile: ObsProfile) -> Path:
    """The whole of OBS's configuration for one run, under ``root`` (XDG_CONFIG_HOME)."""
    obs = root / "obs-studio"
    profile_dir = obs / "basic" / "profiles" / PROFILE
    scenes_dir = obs / "basic" / "scenes"
    profile_dir.mkdir(parents=True)
    scenes_dir.mkdir(parents=True)
    (obs / "global.ini").write_text(
        "[General]\nFirstRun=false\nEnableAutoUpdates=false\nWarnBeforeStartingStream=false\n"
        "WarnBeforeStoppingStream=false\nConfirmOnExit=false\n\n"
        f"[Basic]\nProfile={PROFILE}\nProfileDir={PROFILE}\n"
        f"SceneCollection={SCENES}\nSceneCollectionFile={SCENES}\n"
    )
    (profile_dir / "basic.ini").write_text(
        f"[General]\nName={PROFILE}\n\n"
        f"[Video]\nBaseCX={profile.width}\nBaseCY={profile.height}\n"
        f"OutputCX={profile.width}\nOutputCY={profile.height}\n"
        f"FPSType=1\nFPSInt={profile.fps}\n\n"
        "[Output]\nMode=Simple\nReconnect=true\n"
        f"RetryDelay={profile.retry_delay}\nMaxRetries={profile.max_retries}\n\n"
        f"[SimpleOutput]\nStreamEncoder=x264\nVBitrate={profile.video_kbps}\n"
        f"ABitrate={profile.audio_kbps}\nPreset=ultrafast\n\n"
        "[Audio]\nSampleRate=48000\nChannelSetup=Stereo\n"
    )
    service = {
        "type": "rtmp_custom",
        "settings": {
            "server": profile.server,
            "key": profile.key,
            "use_auth": False,
            "bwtest": False,
        },
    }
    (profile_dir / "service.json").write_text(json.dumps(service))
    color = {
        "id": "color_source",
        "versioned_id": "color_source_v3",
        "name": "Color",
        "settings": {"color": 0xFF3366CC, "width": profile.width, "height": profile.height},
    }
    scene = {
        "id": "scene",
        "versioned_id": "scene",
        "name": "Scene",
        "settings": {
            "id_counter": 1,
            "custom_size": False,
            "items": [
                {
                    "name": "Color",
                    "id": 1,
                    "visible": True,
                    "locked": False,
                    "pos": {"x": 0.0, "y": 0.0},
                    "scale": {"x": 1.0, "y": 1.0},
                    "rot": 0.0,
                    "align": 5,
                    "bounds_type": 0,
                }
            ],
        },
    }
    collection = {
        "name": SCENES,
        "current_scene": "Scene",
        "current_program_scene": "Scene",
        "scene_order": [{"name": "Scene"}],
        "sources": [scene, color],
    }
    (scenes_dir / f"{SCENES}.json").write_text(json.dumps(collection))
    return obs / "logs"


class ObsRun:
    """One OBS process streaming with a profile; its own log is read, never its URL."""

    def __init__(self, proc: asyncio.subprocess.Process, logs: Path) -> None:
        self.proc = proc
        self._logs = logs

    def log(self) -> str:
        files = sorted(self._logs.glob("*.txt")) if self._logs.exists() else []
        return "".join(path.read_text(errors="replace") for path in files)

    async def wait_for_log(self, pattern: str, timeout: float) -> re.Match[str]:
        """OBS writes its log file as it goes; poll it (there is no other signal)."""
        compiled = re.compile(pattern)
        async with asyncio.timeout(timeout):
            while True:
                found = compiled.search(self.log())
                if found:
                    return found
                if self.proc.returncode is not None:
                    raise AssertionError(f"OBS exited ({self.proc.returncode}):\n{self.log()}")
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        """SIGTERM to the whole session: xvfb-run, Xvfb and OBS."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                async with asyncio.timeout(15):
                    await self.proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()


@contextlib.asynccontextmanager
async def run_obs(
    folder: Path, profile: ObsProfile, *, trust: Path | None = None
) -> AsyncIterator[ObsRun]:
    """Start OBS streaming with ``profile``; stop it (and its X server) on the way out.

    ``trust``: a certificate OBS trusts, alone, for RTMPS.
    """
    obs, xvfb = obs_binaries()
    home = folder / "home"
    config = home / ".config"
    logs = write_config(config, profile)
    command = [
        xvfb, "-a", "-s", f"-screen 0 {profile.width}x{profile.height}x24",
        obs, "--startstreaming", "--disable-updater", "--disable-shutdown-check",
        "--disable-missing-files-check", "--multi",
        "--profile", PROFILE, "--collection", SCENES,
    ]  # fmt: skip
    if trust is not None:
        command = trusting(folder / "certs", trust) + command
    environment = {
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(config),
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LIBGL_ALWAYS_SOFTWARE": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=environment,
        cwd=folder,
        start_new_session=True,
    )
    run = ObsRun(proc, logs)
    try:
        yield run
    finally:
        await run.stop()
