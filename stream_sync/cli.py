"""The `stream-sync` command.

Every option also reads STREAM_SYNC_<NAME>; a bad value or a domain error is one
line on stderr and exit status 1 (2 for usage errors), never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
import uvloop

from . import __version__, logs, operations
from .admin import client as admin
from .admin.server import AlreadyRunningError
from .credentials import service
from .credentials.errors import CredentialError
from .node import Node, open_store
from .settings import Settings, SettingsError, load_settings

P = ParamSpec("P")
T = TypeVar("T")


class CommandError(Exception):
    """Ends the command with a one-line message."""


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def _fail_cleanly(func: Callable[P, None]) -> Callable[P, None]:
    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            func(*args, **kwargs)
        except (CommandError, SettingsError, CredentialError, admin.AdminError) as exc:
            click.echo(f"stream-sync: {exc}", err=True)
            sys.exit(1)

    return wrapper


def data_dir_option(func: Callable[P, None]) -> Callable[P, None]:
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder for the database, secrets and admin socket [STREAM_SYNC_DATA_DIR].",
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stream-sync")
def main() -> None:
    """stream-sync: RTMP ingest with stream keys and live stream health."""


@main.command()
@data_dir_option
@click.option("--host", default=None, help="Address to listen on [STREAM_SYNC_HOST; 127.0.0.1].")
@click.option("--rtmp-port", type=int, default=None, help="RTMP port [1935].")
@click.option("--http-port", type=int, default=None, help="HTTP port [8080].")
@click.option(
    "--public-url", default=None, help="Server URL given to encoders, e.g. rtmp://host/live."
)
@click.option("--log-level", default=None, help="debug, info, warning or error [info].")
@_fail_cleanly
def serve(
    data_dir: Path | None,
    host: str | None,
    rtmp_port: int | None,
    http_port: int | None,
    public_url: str | None,
    log_level: str | None,
) -> None:
    """Run ingest, API and state in one process (SQLite and in-process state)."""
    settings = load_settings(
        data_dir=data_dir,
        host=host,
        rtmp_port=rtmp_port,
        http_port=http_port,
        public_url=public_url,
        log_level=log_level,
    )
    settings.rtmp_config()  # validates the combination before anything starts
    logs.configure(settings.log_level)
    _run(_serve(settings))


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with open_store(settings) as store:
        node = Node(settings, store)
        try:
            await node.start()
        except AlreadyRunningError as exc:
            await node.stop()
            raise CommandError(str(exc)) from None
        except OSError as exc:
            await node.stop()
            raise CommandError(_listen_error(settings, exc)) from None
        try:
            await stop.wait()
            click.echo("stream-sync: shutting down", err=True)
        finally:
            await node.stop()


def _listen_error(settings: Settings, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {settings.host}: a port is already in use "
            f"(RTMP {settings.rtmp_port}, HTTP {settings.http_port}); "
            "choose others with --rtmp-port / --http-port"
        )
    return f"cannot listen on {settings.host}: {exc.strerror or exc}"


@main.group()
def channels() -> None:
    """Create and list channels."""


@channels.command("create")
@click.argument("name")
@data_dir_option
@_fail_cleanly
def channels_create(name: str, data_dir: Path | None) -> None:
    """Create a channel and print its server URL and stream key (shown only once)."""
    settings = load_settings(data_dir=data_dir)
    created, server_url = _run(_create_channel(settings, name))
    click.echo(f'Channel "{created.name}" created.\n')
    click.echo(f"  Server:     {server_url}")
    click.echo(f"  Stream key: {created.key}\n")
    click.echo(
        "In OBS: Settings > Stream > Service: Custom, then paste both. This is the only\n"
        f"time the key is shown; `stream-sync keys reset {created.name}` makes a new one."
    )


async def _create_channel(settings: Settings, name: str) -> tuple[Any, str]:
    async with open_store(settings) as store, store.sessions() as session:
        created = await service.create_channel(session, secrets=store.secrets, name=name)
    return created, await _server_url(settings)


async def _server_url(settings: Settings) -> str:
    """The running server knows its real URL; otherwise derive it from the settings."""
    with contextlib.suppress(admin.AdminError, OSError, TimeoutError):
        info = await admin.call(settings.data_dir, "info")
        if isinstance(info, dict) and isinstance(info.get("rtmp_url"), str):
            return str(info["rtmp_url"])
    return settings.public_rtmp_url()


@channels.command("list")
@data_dir_option
@_fail_cleanly
def channels_list(data_dir: Path | None) -> None:
    """List channels, their key ids and whether they are live."""
    settings = load_settings(data_dir=data_dir)
    rows, live = _run(_list_channels(settings))
    if not rows:
        click.echo("No channels yet: stream-sync channels create NAME")
        return
    click.echo(f"{'NAME':<24} {'PUBLIC ID':<22} {'KEY ID':<14} {'CREATED (UTC)':<17} LIVE")
    for row in rows:
        created = row.created_at.strftime("%Y-%m-%d %H:%M")
        status = "?" if live is None else ("live" if row.name in live else "-")
        click.echo(
            f"{row.name:<24} {row.public_id:<22} {row.key_id or '-':<14} {created:<17} {status}"
        )


async def _list_channels(settings: Settings) -> tuple[list[Any], set[str] | None]:
    async with open_store(settings) as store, store.sessions() as session:
        rows = await service.list_channels(session)
    streams = await admin.call(settings.data_dir, "streams.list")
    live = None if streams is None else {str(stream["channel"]) for stream in streams}
    return rows, live


@main.group()
def keys() -> None:
    """Manage stream keys."""


@keys.command("reset")
@click.argument("channel")
@data_dir_option
@_fail_cleanly
def keys_reset(channel: str, data_dir: Path | None) -> None:
    """Replace a channel's key; the old one stops working at once, live streams included."""
    settings = load_settings(data_dir=data_dir)
    result = _run(_reset_key(settings, channel))
    click.echo(f'New stream key for "{result["channel"]}": {result["key"]}')
    if result["revoked_key_id"]:
        click.echo(f"The old key ({result['revoked_key_id']}) no longer works.")


async def _reset_key(settings: Settings, channel: str) -> dict[str, Any]:
    reply = await admin.call(settings.data_dir, "keys.reset", channel=channel)
    if reply is not None:
        return dict(reply)
    async with open_store(settings) as store:  # no server running: nobody to disconnect
        result = await operations.reset_channel_key(
            sessions=store.sessions, secrets=store.secrets, bus=None, channel_name=channel
        )
    return {
        "channel": result.channel_name,
        "key": result.key,
        "revoked_key_id": result.revoked_key_id,
    }
