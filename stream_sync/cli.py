"""The `stream-sync` command.

Every option also reads STREAM_SYNC_<NAME>; a bad value or a domain error is one
line on stderr and exit status 1 (2 for usage errors), never a traceback.

Commands work on the database directly. Where a running server must act (a key
reset cuts a live publisher), the change is announced to it through the admin
socket in the data folder; with no server running there is nobody to tell.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import getpass
import logging
import resource
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import timedelta
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import click
import uvloop
from sqlalchemy.engine import make_url

from . import __version__, heap, logs
from .accounts import users
from .admin import client as admin
from .admin.server import AlreadyRunningError
from .audit import Actor
from .credentials import server_secrets, service
from .db.backup import backup_sqlite
from .db.engine import sqlite_url
from .db.models import Role as UserRole
from .errors import DomainError
from .ingest import tls
from .ingest.keycheck import KeyChecker
from .monitor import history
from .node import ALL_ROLES, Node, Role, Store, open_store
from .operations import ControlPlane
from .outputs import targets as push_targets
from .servers import service as servers
from .settings import MAX_WORKERS, Settings, SettingsError, load_settings
from .state.engines import open_state
from .webhooks import endpoints
from .workers import worker_node_id
from .workers.link import SupervisorLink, settings_from_supervisor
from .workers.supervisor import WorkerStartError

log = logging.getLogger("stream_sync")
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
        except (
            CommandError,
            SettingsError,
            DomainError,
            admin.AdminError,
            WorkerStartError,
        ) as exc:
            click.echo(f"stream-sync: {exc}", err=True)
            sys.exit(1)

    return wrapper


def store_options(func: Callable[P, None]) -> Callable[P, None]:
    """--data-dir and --database-url, shared by every command that opens the store."""
    func = click.option(
        "--database-url",
        default=None,
        help="SQLAlchemy URL, e.g. postgresql+asyncpg://... [STREAM_SYNC_DATABASE_URL; "
        "default: SQLite in the data folder].",
    )(func)
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Folder for the database, secrets and admin socket [STREAM_SYNC_DATA_DIR].",
    )(func)


def _actor() -> Actor:
    """CLI actions are audited as the operating-system user who ran them."""
    try:
        return Actor(f"cli:{getpass.getuser()}")
    except (KeyError, OSError):
        return Actor.cli()


@contextlib.asynccontextmanager
async def _control(settings: Settings) -> AsyncIterator[tuple[Store, ControlPlane]]:
    """The control plane as a CLI process sees it.

    In a cluster (Redis configured) the CLI talks to the cluster's bus and key cache
    itself; otherwise its events go to a server running with this data folder.
    """
    async with open_store(settings) as store:
        if settings.redis_url is None:
            bus = admin.AdminSocketBus(settings.data_dir)
            yield store, ControlPlane(sessions=store.sessions, secrets=store.secrets, bus=bus)
            return
        state = open_state(
            store.sessions, redis_url=settings.redis_url, prefix=settings.redis_prefix
        )
        checker = KeyChecker(sessions=store.sessions, secrets=store.secrets, cache=state.cache)
        try:
            yield (
                store,
                ControlPlane(
                    sessions=store.sessions, secrets=store.secrets, bus=state.bus, checker=checker
                ),
            )
        finally:
            await state.close()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stream-sync")
def main() -> None:
    """stream-sync: RTMP ingest with stream keys and live stream health."""


# serve ------------------------------------------------------------------------------------


def _tls_files(func: Callable[P, None]) -> Callable[P, None]:
    """TLS for RTMPS and HTTPS: on with a certificate and its key; SIGHUP reloads them."""
    for option in reversed(
        [
            click.option(
                "--tls-cert",
                type=click.Path(path_type=Path),
                default=None,
                help="PEM certificate (and chain): RTMPS and HTTPS [STREAM_SYNC_TLS_CERT].",
            ),
            click.option(
                "--tls-key",
                type=click.Path(path_type=Path),
                default=None,
                help="Its PEM private key [STREAM_SYNC_TLS_KEY].",
            ),
        ]
    ):
        func = option(func)
    return func


def _tls_options(func: Callable[P, None]) -> Callable[P, None]:
    func = click.option("--rtmps-port", type=int, default=None, help="RTMPS port [1936].")(func)
    return _tls_files(func)


def _workers_option(func: Callable[P, None]) -> Callable[P, None]:
    return click.option(
        "--workers",
        type=int,
        default=None,
        help="Ingest processes sharing the RTMP port [STREAM_SYNC_WORKERS; 1, or one per "
        "core with Redis].",
    )(func)


@main.command()
@store_options
@click.option("--host", default=None, help="Address to listen on [STREAM_SYNC_HOST; 127.0.0.1].")
@click.option("--rtmp-port", type=int, default=None, help="RTMP port [1935].")
@_tls_options
@click.option("--http-port", type=int, default=None, help="HTTP port [8080].")
@click.option(
    "--public-url", default=None, help="Server URL given to encoders, e.g. rtmp://host/live."
)
@click.option("--server-name", default=None, help="This node's ingest server name [host name].")
@click.option("--log-level", default=None, help="debug, info, warning or error [info].")
@_workers_option
@_fail_cleanly
def serve(**options: Any) -> None:
    """Run ingest, API and state in one process (SQLite and in-process state).

    With --workers N (needs Redis) N ingest processes share the RTMP port and this
    one runs the API and the monitor and restarts workers that die.
    """
    _start(ALL_ROLES, options)


def _start(roles: frozenset[Role], options: dict[str, Any]) -> None:
    worker_index: int | None = options.pop("worker_index", None)
    # A worker runs exactly what its supervisor resolved; everyone else reads options.
    settings = settings_from_supervisor() if worker_index else load_settings(**options)
    settings.rtmp_config()  # validates the combination before anything starts
    settings.webhook_policy()
    settings.webhook_limits()
    settings.check_tls()
    if (files := settings.tls_files()) is not None:
        try:
            tls.server_context(*files)  # its problem, in one line, before anything starts
        except tls.TlsError as exc:
            raise CommandError(f"cannot serve RTMPS: {exc}") from None
    if roles != ALL_ROLES and settings.redis_url is None:
        raise CommandError(
            f"`stream-sync {'/'.join(sorted(roles))}` runs as part of a cluster: set "
            "STREAM_SYNC_REDIS_URL (and STREAM_SYNC_DATABASE_URL); for one process use "
            "`stream-sync serve`"
        )
    workers = settings.worker_count() if Role.INGEST in roles else 1
    tag = worker_node_id(settings.server_name, worker_index) if worker_index else None
    logs.configure(settings.log_level, tag=tag)
    if Role.INGEST in roles:
        _raise_file_limit(settings.max_connections)
    _run(_serve(settings, roles, workers, worker_index))


def _raise_file_limit(connections: int) -> None:
    """Room for every connection the guard lets in: many systems start at 1024 files."""
    wanted = connections + 1024  # the database pool, Redis, logs, the API's clients
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted or soft == resource.RLIM_INFINITY:
        return
    limit = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    if limit < wanted:
        log.warning(
            "open files limited to %d (max_connections %d needs %d): raise `ulimit -Hn`",
            limit,
            connections,
            wanted,
        )


def _role_options(func: Callable[P, None]) -> Callable[P, None]:
    for option in reversed(
        [
            click.option("--host", default=None, help="Address to listen on [127.0.0.1]."),
            click.option("--server-name", default=None, help="This node's name [host name]."),
            click.option(
                "--redis-url", default=None, help="redis://host:6379/0 [STREAM_SYNC_REDIS_URL]."
            ),
            click.option("--log-level", default=None, help="debug, info, warning or error."),
        ]
    ):
        func = option(func)
    return store_options(func)


@main.group(invoke_without_command=True)
@_role_options
@click.option("--rtmp-port", type=int, default=None, help="RTMP port [1935].")
@_tls_options
@click.option("--public-url", default=None, help="This node's URL for encoders.")
@click.option("--capacity", type=int, default=None, help="Publishers this node takes [1000].")
@_workers_option
@click.option("--worker-index", type=click.IntRange(1, MAX_WORKERS), default=None, hidden=True)
@click.pass_context
@_fail_cleanly
def ingest(context: click.Context, /, **options: Any) -> None:
    """Run an ingest node of a cluster (needs Redis); or a subcommand.

    With --workers N, N processes share the RTMP port (one per core by default) and
    this one restarts those that die.
    \f
    The supervisor starts each worker as `ingest --worker-index i` (a hidden option).
    """
    if context.invoked_subcommand is None:
        _start(frozenset({Role.INGEST}), options)


@ingest.command("drain")
@click.argument("node")
@click.option(
    "--deadline",
    type=click.FloatRange(0, 86_400),
    default=None,
    help="Seconds until the rest are closed [600].",
)
@store_options
@_fail_cleanly
def ingest_drain(node: str, deadline: float | None, **options: Any) -> None:
    """Stop admitting on NODE, move capable publishers elsewhere, close the rest later."""
    settings = load_settings(**options)
    seconds = settings.drain_deadline if deadline is None else deadline

    async def run() -> None:
        async with _control(settings) as (_, control):
            await control.drain(node=node, deadline_seconds=seconds, actor=_actor())

    _run(run())
    click.echo(f"Draining {node}: publishers still there in {seconds:.0f}s are closed.")


@main.command("api")
@_role_options
@click.option("--http-port", type=int, default=None, help="HTTP port [8080].")
@_tls_files
@click.option("--public-url", default=None, help="Default server URL shown to streamers.")
@_fail_cleanly
def api_role(**options: Any) -> None:
    """Run the HTTP API of a cluster (needs Redis)."""
    _start(frozenset({Role.API}), options)


@main.command("monitor")
@_role_options
@_fail_cleanly
def monitor_role(**options: Any) -> None:
    """Run the monitor of a cluster: dead nodes, session history, retention (needs Redis)."""
    _start(frozenset({Role.MONITOR}), options)


async def _serve(
    settings: Settings, roles: frozenset[Role], workers: int, worker_index: int | None
) -> None:
    heap.tune()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    link = SupervisorLink(on_lost=stop.set) if worker_index else None
    if link is not None:
        link.start()  # alive from the first moment: the supervisor watches the start too
    async with open_store(settings) as store:
        node = Node(settings, store, roles, ingest_workers=workers, worker_index=worker_index)
        loop.add_signal_handler(signal.SIGHUP, node.reload_tls)
        _freeze_startup_heap()  # before the node listens: see there
        try:
            await node.start()
        except AlreadyRunningError as exc:
            await node.stop()
            raise CommandError(str(exc)) from None
        except OSError as exc:
            await node.stop()
            raise CommandError(_listen_error(settings, exc)) from None
        except WorkerStartError:
            await node.stop()
            raise
        _freeze_startup_heap()
        if link is not None:
            link.ready()
        try:
            await stop.wait()
            if link is None:
                click.echo("stream-sync: shutting down", err=True)
        finally:
            if link is not None:
                link.close()
            await node.stop()


def _freeze_startup_heap() -> None:
    """Hide what start-up made from the cyclic collector: it lives as long as the process.

    The frameworks are some 150,000 objects that never die, and every full collection
    walked them all again: 100 ms of CPU each, twice in the 30 s of the 200-stream
    benchmark (benchmarks/results/ingest.md). Called twice: before the node starts,
    for the imports (the collection that walks them all, 60-110 ms, paid before the
    node listens: after it, it held up the first encoders of a restart's storm), and
    once it has started, for what the start made (frozen objects are not walked again).
    """
    gc.collect()
    gc.freeze()


def _listen_error(settings: Settings, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        ports = [("RTMP", settings.rtmp_port), ("HTTP", settings.http_port)]
        if settings.tls:
            ports.insert(1, ("RTMPS", settings.rtmps_port))
        return (
            f"cannot listen on {settings.host}: a port is already in use "
            f"({', '.join(f'{name} {port}' for name, port in ports)}); choose others with "
            + " / ".join(f"--{name.lower()}-port" for name, _ in ports)
        )
    return f"cannot listen on {settings.host}: {exc.strerror or exc}"


# users ------------------------------------------------------------------------------------


@main.group("users")
def users_group() -> None:
    """Accounts: admins manage everything, streamers their own channels."""


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        return sys.stdin.readline().rstrip("\n")
    if not sys.stdin.isatty():
        raise CommandError("no terminal to ask for a password; use --password-stdin")
    value: str = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    return value


@users_group.command("create")
@click.argument("email")
@click.option("--admin", "is_admin", is_flag=True, help="Make the account an admin.")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@store_options
@_fail_cleanly
def users_create(email: str, is_admin: bool, password_stdin: bool, **options: Any) -> None:
    """Create an account (the password is asked for, or read from stdin)."""
    settings = load_settings(**options)
    password = _read_password(password_stdin)
    role = UserRole.ADMIN if is_admin else UserRole.STREAMER

    async def run() -> users.UserInfo:
        async with _control(settings) as (_, control):
            return await control.create_user(
                email=email, password=password, role=role, actor=_actor()
            )

    created = _run(run())
    click.echo(f"Created {created.role} {created.email} (id {created.id}).")


@users_group.command("list")
@store_options
@_fail_cleanly
def users_list(**options: Any) -> None:
    """List accounts."""
    settings = load_settings(**options)

    async def run() -> list[users.UserInfo]:
        async with open_store(settings) as store, store.sessions() as session:
            return await users.list_users(session)

    rows = _run(run())
    if not rows:
        click.echo("No accounts yet: stream-sync users create EMAIL --admin")
        return
    click.echo(f"{'ID':>4}  {'EMAIL':<40} {'ROLE':<9} {'CREATED (UTC)':<17} STATUS")
    for user in rows:
        created = user.created_at.strftime("%Y-%m-%d %H:%M")
        state = "disabled" if user.disabled else "active"
        click.echo(f"{user.id:>4}  {user.email:<40} {user.role!s:<9} {created:<17} {state}")


async def _user_id(store: Store, email: str) -> int:
    async with store.sessions() as session:
        return (await users.find_user(session, email=email)).id


@users_group.command("disable")
@click.argument("email")
@store_options
@_fail_cleanly
def users_disable(email: str, **options: Any) -> None:
    """Sign the user out everywhere and stop their stream keys, live streams included."""
    settings = load_settings(**options)

    async def run() -> None:
        async with _control(settings) as (store, control):
            await control.disable_user(user_id=await _user_id(store, email), actor=_actor())

    _run(run())
    click.echo(f"Disabled {email}; their stream keys no longer work.")


@users_group.command("enable")
@click.argument("email")
@store_options
@_fail_cleanly
def users_enable(email: str, **options: Any) -> None:
    """Let a disabled user sign in again (their old stream keys stay revoked)."""
    settings = load_settings(**options)

    async def run() -> None:
        async with open_store(settings) as store:
            user_id = await _user_id(store, email)
            async with store.sessions() as session:
                await users.enable_user(session, user_id=user_id, actor=_actor())

    _run(run())
    click.echo(f"Enabled {email}.")


@users_group.command("set-password")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@store_options
@_fail_cleanly
def users_set_password(email: str, password_stdin: bool, **options: Any) -> None:
    """Set a user's password (signs them out everywhere)."""
    settings = load_settings(**options)
    password = _read_password(password_stdin)

    async def run() -> None:
        async with open_store(settings) as store:
            user_id = await _user_id(store, email)
            async with store.sessions() as session:
                await users.set_password(
                    session, user_id=user_id, new_password=password, actor=_actor()
                )

    _run(run())
    click.echo(f"Password changed for {email}.")


# channels ---------------------------------------------------------------------------------


@main.group()
def channels() -> None:
    """Create, list, map and delete channels."""


@channels.command("create")
@click.argument("name")
@click.option("--owner", default=None, help="Owner's email [the first admin].")
@store_options
@_fail_cleanly
def channels_create(name: str, owner: str | None, **options: Any) -> None:
    """Create a channel and print its server URL and stream key (shown only once)."""
    settings = load_settings(**options)

    async def run() -> tuple[service.CreatedChannel, str]:
        async with open_store(settings) as store:
            owner_id = await _user_id(store, owner) if owner else None
            async with store.sessions() as session:
                created = await service.create_channel(
                    session, secrets=store.secrets, name=name, actor=_actor(), owner_id=owner_id
                )
        return created, await _server_url(settings)

    created, server_url = _run(run())
    click.echo(f'Channel "{created.name}" created.\n')
    click.echo(f"  Server:     {server_url}")
    click.echo(f"  Stream key: {created.key}\n")
    click.echo(
        "In OBS: Settings > Stream > Service: Custom, then paste both. This is the only\n"
        f"time the key is shown; `stream-sync keys reset {created.name}` makes a new one."
    )


async def _server_url(settings: Settings) -> str:
    """The running server knows its real URL; otherwise derive it from the settings."""
    with contextlib.suppress(admin.AdminError, OSError, TimeoutError):
        info = await admin.call(settings.data_dir, "info")
        if isinstance(info, dict) and isinstance(info.get("rtmp_url"), str):
            return str(info["rtmp_url"])
    return settings.public_rtmp_url()


@channels.command("list")
@store_options
@_fail_cleanly
def channels_list(**options: Any) -> None:
    """List channels, their key ids and whether they are live."""
    settings = load_settings(**options)

    async def run() -> tuple[list[service.ChannelSummary], set[int]]:
        async with open_store(settings) as store:
            async with store.sessions() as session:
                rows = await service.list_channels(session)
            async with store.sessions() as session:
                live = await history.live_channel_ids(session)
        return rows, live

    rows, live = _run(run())
    if not rows:
        click.echo("No channels yet: stream-sync channels create NAME")
        return
    click.echo(f"{'NAME':<24} {'PUBLIC ID':<22} {'KEY ID':<14} {'CREATED (UTC)':<17} LIVE")
    for row in rows:
        created = row.created_at.strftime("%Y-%m-%d %H:%M")
        status = "live" if row.channel_id in live else "-"
        click.echo(
            f"{row.name:<24} {row.public_id:<22} {row.key_id or '-':<14} {created:<17} {status}"
        )


async def _channel_id(store: Store, ref: str) -> int:
    async with store.sessions() as session:
        return (await service.find_channel(session, ref)).id


@channels.command("delete")
@click.argument("channel")
@click.confirmation_option(prompt="Delete the channel, its keys and its history?")
@store_options
@_fail_cleanly
def channels_delete(channel: str, **options: Any) -> None:
    """Delete a channel (by name or public id); a live publisher is cut."""
    settings = load_settings(**options)

    async def run() -> None:
        async with _control(settings) as (store, control):
            await control.delete_channel(
                channel_id=await _channel_id(store, channel), actor=_actor()
            )

    _run(run())
    click.echo(f"Deleted {channel}.")


@channels.command("map")
@click.argument("channel")
@click.argument("server", required=False)
@store_options
@_fail_cleanly
def channels_map(channel: str, server: str | None, **options: Any) -> None:
    """Map a channel to an ingest server (omit SERVER to unmap)."""
    settings = load_settings(**options)

    async def run() -> None:
        async with open_store(settings) as store:
            channel_id = await _channel_id(store, channel)
            server_id = None
            if server:
                async with store.sessions() as session:
                    server_id = (await servers.get_server(session, ref=server)).id
            async with store.sessions() as session:
                await service.set_channel_server(
                    session, channel_id=channel_id, server_id=server_id, actor=_actor()
                )

    _run(run())
    click.echo(f"{channel} -> {server or 'this node (unmapped)'}")


@main.group()
def streams() -> None:
    """Live streams."""


@streams.command("kick")
@click.argument("channel")
@store_options
@_fail_cleanly
def streams_kick(channel: str, **options: Any) -> None:
    """End CHANNEL's live publish without changing its key; the encoder may reconnect."""
    settings = load_settings(**options)

    async def run() -> None:
        async with _control(settings) as (store, control):
            await control.kick(channel_id=await _channel_id(store, channel), actor=_actor())

    _run(run())
    click.echo(f"Asked the ingest node to stop {channel}'s live publish.")


# keys -------------------------------------------------------------------------------------


@main.group()
def keys() -> None:
    """Reset, rotate and revoke stream keys (CHANNEL is a name or a public id)."""


@keys.command("reset")
@click.argument("channel")
@store_options
@_fail_cleanly
def keys_reset(channel: str, **options: Any) -> None:
    """New key now; every old key stops working, live publishers included (a leaked key)."""
    settings = load_settings(**options)

    async def run() -> service.KeyReset:
        async with _control(settings) as (store, control):
            return await control.reset_key(
                channel_id=await _channel_id(store, channel), actor=_actor()
            )

    result = _run(run())
    click.echo(f'New stream key for "{result.channel_name}": {result.key}')
    if result.revoked_key_ids:
        click.echo(f"No longer valid: {', '.join(result.revoked_key_ids)}.")


@keys.command("rotate")
@click.argument("channel")
@click.option(
    "--overlap",
    type=click.IntRange(0, 7 * 24 * 3600),
    default=None,
    help="Seconds the old key keeps working [STREAM_SYNC_KEY_ROTATION_OVERLAP; 600].",
)
@store_options
@_fail_cleanly
def keys_rotate(channel: str, overlap: int | None, **options: Any) -> None:
    """New key; the old one keeps working for a while (a planned change)."""
    settings = load_settings(**options)
    seconds = settings.key_rotation_overlap if overlap is None else overlap

    async def run() -> service.KeyRotation:
        async with _control(settings) as (store, control):
            return await control.rotate_key(
                channel_id=await _channel_id(store, channel),
                actor=_actor(),
                overlap=timedelta(seconds=seconds),
            )

    result = _run(run())
    click.echo(f'New stream key for "{result.channel_name}": {result.key}')
    if result.previous_key_id and result.previous_expires_at:
        until = result.previous_expires_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        click.echo(f"The previous key ({result.previous_key_id}) works until {until}.")


@keys.command("revoke")
@click.argument("channel")
@store_options
@_fail_cleanly
def keys_revoke(channel: str, **options: Any) -> None:
    """Revoke every key of the channel without a replacement; live publishers are cut."""
    settings = load_settings(**options)

    async def run() -> tuple[str, ...]:
        async with _control(settings) as (store, control):
            return await control.revoke_keys(
                channel_id=await _channel_id(store, channel), actor=_actor()
            )

    revoked = _run(run())
    click.echo(f"Revoked: {', '.join(revoked) or 'nothing (no active key)'}.")


# ingest servers ---------------------------------------------------------------------------


@main.group("ingest-servers")
def ingest_servers() -> None:
    """The ingest servers channels can be mapped to."""


@ingest_servers.command("add")
@click.argument("name")
@click.argument("rtmp_url")
@click.option("--region", default=None)
@click.option("--capacity", type=click.IntRange(0, 100_000), default=100, show_default=True)
@store_options
@_fail_cleanly
def ingest_servers_add(
    name: str, rtmp_url: str, region: str | None, capacity: int, **options: Any
) -> None:
    """Add an ingest server (NAME is what its node passes as --server-name)."""
    settings = load_settings(**options)

    async def run() -> servers.ServerInfo:
        async with open_store(settings) as store, store.sessions() as session:
            return await servers.add_server(
                session,
                name=name,
                rtmp_url=rtmp_url,
                region=region,
                capacity=capacity,
                actor=_actor(),
            )

    server = _run(run())
    click.echo(f"Added ingest server {server.name} ({server.rtmp_url}).")


@ingest_servers.command("list")
@store_options
@_fail_cleanly
def ingest_servers_list(**options: Any) -> None:
    """List ingest servers."""
    settings = load_settings(**options)

    async def run() -> list[servers.ServerInfo]:
        async with open_store(settings) as store, store.sessions() as session:
            return await servers.list_servers(session)

    rows = _run(run())
    if not rows:
        click.echo("No ingest servers configured; channels use this node's URL.")
        return
    click.echo(f"{'NAME':<20} {'RTMP URL':<40} {'REGION':<12} {'CAPACITY':>8}  DRAINING")
    for row in rows:
        draining = "yes" if row.draining else "no"
        click.echo(
            f"{row.name:<20} {row.rtmp_url:<40} {row.region or '-':<12} {row.capacity:>8}  "
            f"{draining}"
        )


# db and secrets -----------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Schema migrations and backups."""


@db.command("upgrade")
@store_options
@_fail_cleanly
def db_upgrade(**options: Any) -> None:
    """Migrate the database to the current schema (serve does this on start for SQLite)."""
    settings = load_settings(**options)

    async def run() -> None:
        async with open_store(settings):
            pass  # opening the store migrates it

    _run(run())
    click.echo("Database schema is current.")


@db.command("backup")
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--overwrite", is_flag=True, help="Replace TARGET if it exists.")
@store_options
@_fail_cleanly
def db_backup(target: Path, overwrite: bool, **options: Any) -> None:
    """Copy the SQLite database consistently, even while the server runs."""
    settings = load_settings(**options)
    url = make_url(settings.database_url or sqlite_url(settings.data_dir))
    if url.get_backend_name() != "sqlite" or not url.database:
        raise CommandError(
            "db backup copies SQLite databases; for PostgreSQL use pg_dump, e.g. "
            "pg_dump --format=custom --file=FILE DBNAME"
        )
    source = Path(url.database)
    if not source.exists():
        raise CommandError(f"there is no database at {source} yet")
    backup_sqlite(source, target, overwrite=overwrite)
    click.echo(f"Backed up {source} to {target}.")


@main.group("secrets")
def secrets_group() -> None:
    """The server secrets that protect stream keys."""


@secrets_group.command("rotate")
@store_options
@_fail_cleanly
def secrets_rotate(**options: Any) -> None:
    """New HMAC and encryption secrets; every issued key keeps working.

    Stop the server first: it holds the current secrets in memory.
    """
    settings = load_settings(**options)

    async def run() -> int:
        if await admin.call(settings.data_dir, "info") is not None:
            raise CommandError("a server is running with this data folder; stop it first")
        server_secrets.rotate_server_secrets(settings.data_dir)
        async with open_store(settings) as store, store.sessions() as session:
            count = await service.rehash_all_keys(session, secrets=store.secrets, actor=_actor())
            await endpoints.reencrypt_secrets(session, secrets=store.secrets)
            await push_targets.reencrypt_keys(session, secrets=store.secrets)
        server_secrets.drop_previous_secrets(settings.data_dir)
        return count

    count = _run(run())
    click.echo(f"Rotated the server secrets and re-protected {count} keys.")
