"""What the log handler writes: keys and tokens masked in messages and tracebacks."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from stream_sync.credentials.keys import generate_key
from stream_sync.logs import RedactKeys


@pytest.fixture
def written() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger whose lines go through the production filter into a string."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactKeys())
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.propagate = False
    yield logger, stream
    logger.removeHandler(handler)
    logger.propagate = True


def test_a_key_cut_short_in_a_message_is_masked(
    written: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = written
    key = generate_key()
    logger.warning("connect refused reason=%r", f"Unknown application 'live/{key.key[:60]}'")
    assert key.key[17:37] not in stream.getvalue()
    assert f"'live/ssk_{key.key_id}_***'" in stream.getvalue()


def test_a_key_in_the_exception_a_failure_was_raised_from_is_masked(
    written: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = written
    key = generate_key()
    try:
        try:
            raise ValueError(f"no channel for {key.key}")
        except ValueError as error:
            raise RuntimeError("lookup failed") from error
    except RuntimeError:
        logger.exception("admission failed")
    text = stream.getvalue()
    assert key.key[17:37] not in text
    assert f"ValueError: no channel for ssk_{key.key_id}_***" in text
    assert "RuntimeError: lookup failed" in text  # the traceback stays, masked
