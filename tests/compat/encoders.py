"""The encoders of the compatibility suite: where each one is and what it calls itself."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support import debian_ffmpeg, require, static_ffmpeg

REPO = Path(__file__).parents[2]
FFMPEG7 = REPO / ".venv" / "encoders" / "ffmpeg-7.0"  # `make test` unpacks it (Makefile)


@dataclass(frozen=True)
class Ffmpeg:
    client: str  # the table's Client column
    exe: str

    @functools.cached_property
    def version(self) -> str:
        return version_of([self.exe, "-version"], r"ffmpeg version (\S+)")


def ffmpeg(build: str) -> Ffmpeg:
    """'debian' (5.1: no Enhanced RTMP), '7.0' or '9.0' (static builds from PyPI)."""
    if build == "debian":
        return Ffmpeg("FFmpeg (Debian)", debian_ffmpeg())
    if build == "7.0":
        require(FFMPEG7.exists(), f"FFmpeg 7.0 at {FFMPEG7} (make test unpacks it)")
        return Ffmpeg("FFmpeg (static, imageio-ffmpeg 0.6.0)", str(FFMPEG7))
    assert build == "9.0"
    return Ffmpeg("FFmpeg (static, imageio-ffmpeg 0.8.1)", static_ffmpeg())


def version_of(command: list[str], pattern: str) -> str:
    """The version a client prints about itself (the table's Version column)."""
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    found = re.search(pattern, out.stdout + out.stderr)
    return found.group(1) if found else "unknown"


def gst_version(exe: str) -> str:
    return version_of([exe, "--version"], r"GStreamer (\S+)")


def trusting(folder: Path, certificate: Path) -> list[str]:
    """A command prefix under which ``certificate`` is the only trusted one.

    OBS (mbedTLS) reads every file in /etc/ssl/certs, GStreamer (GnuTLS) the bundle
    ca-certificates.crt in it: bubblewrap shows the command a folder holding only the
    test certificate there, so the host's store is never touched.
    """
    bwrap = shutil.which("bwrap")
    require(bwrap is not None, "bubblewrap (Debian package bubblewrap)")
    assert bwrap is not None
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("ca-certificates.crt", "stream-sync-test.pem"):
        shutil.copy(certificate, folder / name)
    return [bwrap, "--dev-bind", "/", "/", "--ro-bind", str(folder), "/etc/ssl/certs", "--"]
