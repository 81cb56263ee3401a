"""RTMPS: real encoders publishing inside TLS, TLS 1.2 at least, certificates renewed live."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509

from stream_sync.audit import Actor
from stream_sync.credentials import service
from stream_sync.node import Node
from tests.integration.conftest import node_settings, running_node
from tests.support import (
    debian_ffmpeg,
    ffmpeg_command,
    publish_to_end,
    write_certificate,
)


@pytest.fixture
async def tls_node(tmp_path: Path) -> AsyncIterator[Node]:
    cert, key = write_certificate(tmp_path / "tls")
    settings = node_settings(tmp_path / "data", rtmps_port=0, tls_cert=cert, tls_key=key)
    async with running_node(settings) as running:
        yield running


@pytest.fixture
async def tls_channel(tls_node: Node) -> service.CreatedChannel:
    async with tls_node.sessions() as session:
        return await service.create_channel(
            session, secrets=tls_node.store.secrets, name="demo", actor=Actor.cli()
        )


def localhost_url(node: Node, key: str) -> str:
    return f"rtmps://localhost:{node.rtmps_port}/live/{key}"


async def served_certificate(
    node: Node, port: int | None = None, **context_options: object
) -> bytes:
    """The certificate a fresh TLS handshake with ``port`` (RTMPS by default) gets (DER)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    for name, value in context_options.items():
        setattr(context, name, value)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port or node.rtmps_port, ssl=context, server_hostname="localhost"
    )
    try:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True)
        assert der is not None
        return bytes(der)
    finally:
        writer.close()
        await writer.wait_closed()
        del reader


def der_of(cert: Path) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return x509.load_pem_x509_certificate(cert.read_bytes()).public_bytes(Encoding.DER)


@pytest.mark.ffmpeg
async def test_ffmpeg_publishes_over_rtmps(
    tls_node: Node, tls_channel: service.CreatedChannel, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    url = localhost_url(tls_node, tls_channel.key)
    started, ended = await publish_to_end(
        tls_node.bus, ffmpeg_command(debian_ffmpeg(), url, seconds=2)
    )
    assert started.channel_id == tls_channel.channel_id
    assert ended.reason == "client stopped (FCUnpublish)"
    assert (ended.video_codec, ended.audio_codec) == ("avc1", "mp4a")
    assert ended.media_bytes > 20_000
    assert tls_node.rtmps_url == f"rtmps://127.0.0.1:{tls_node.rtmps_port}/live"
    assert tls_channel.key not in caplog.text


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated")
async def test_only_tls_1_2_and_later_are_spoken(tls_node: Node) -> None:
    def client(version: ssl.TLSVersion) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_ciphers("DEFAULT:@SECLEVEL=0")  # so this client can offer TLS 1.1 at all
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = version
        return context

    _, writer = await asyncio.open_connection(
        "127.0.0.1", tls_node.rtmps_port, ssl=client(ssl.TLSVersion.TLSv1_2)
    )
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    writer.close()
    await writer.wait_closed()
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.open_connection(
            "127.0.0.1", tls_node.rtmps_port, ssl=client(ssl.TLSVersion.TLSv1_1)
        )


async def test_a_renewed_certificate_is_served_without_a_restart(
    tls_node: Node, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    settings = tls_node.settings
    assert settings.tls_cert is not None
    assert settings.tls_key is not None
    first = der_of(settings.tls_cert)
    assert await served_certificate(tls_node) == first
    assert await served_certificate(tls_node, tls_node.http_port) == first  # HTTPS: the same

    renewed, renewed_key = write_certificate(tmp_path / "renewed")
    settings.tls_cert.write_bytes(renewed.read_bytes())
    settings.tls_key.write_bytes(renewed_key.read_bytes())
    tls_node.reload_tls()
    assert await served_certificate(tls_node) == der_of(renewed)
    assert await served_certificate(tls_node, tls_node.http_port) == der_of(renewed)  # HTTPS
    assert "TLS certificate reloaded" in caplog.text

    # A half-written renewal (certificate of one pair, key of another) keeps the last one.
    other, other_key = write_certificate(tmp_path / "other")
    settings.tls_cert.write_bytes(other.read_bytes())
    tls_node.reload_tls()
    assert await served_certificate(tls_node) == der_of(renewed)
    assert "TLS certificate not reloaded, the previous one stays" in caplog.text
    del other_key
