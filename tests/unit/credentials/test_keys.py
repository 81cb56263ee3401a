from __future__ import annotations

import math
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream_sync.credentials.keys import (
    BASE62_ALPHABET,
    KEY_LENGTH,
    generate_key,
    key_hash,
    mask_key,
    parse_key_id,
    redact,
)

base62 = st.sampled_from(BASE62_ALPHABET)


def _key(key_id: str = "AbCdEfGhIjKl", secret: str = "s" * 43) -> str:
    return f"ssk_{key_id}_{secret}"


def test_alphabet_is_exactly_base62() -> None:
    assert sorted(BASE62_ALPHABET) == sorted(string.digits + string.ascii_letters)
    assert len(set(BASE62_ALPHABET)) == 62


def test_secret_carries_at_least_256_bits() -> None:
    assert 43 * math.log2(62) >= 256


def test_generated_keys_have_the_documented_shape() -> None:
    for _ in range(200):
        generated = generate_key()
        prefix, key_id, secret = generated.key.split("_")
        assert prefix == "ssk"
        assert key_id == generated.key_id
        assert len(key_id) == 12
        assert len(secret) == 43
        assert len(generated.key) == KEY_LENGTH == 60
        assert set(key_id + secret) <= set(BASE62_ALPHABET)
        assert parse_key_id(generated.key) == key_id


def test_generated_keys_are_unique_and_use_the_whole_alphabet() -> None:
    keys = [generate_key() for _ in range(5000)]
    assert len({k.key for k in keys}) == len(keys)
    assert len({k.key_id for k in keys}) == len(keys)
    # 5000 * 43 draws: every one of the 62 characters shows up.
    assert set("".join(k.key.split("_")[2] for k in keys)) == set(BASE62_ALPHABET)


def test_repr_never_shows_the_key() -> None:
    generated = generate_key()
    secret = generated.key.split("_")[2]
    assert secret not in repr(generated)
    assert generated.key_id in repr(generated)


@given(
    key_id=st.text(base62, min_size=12, max_size=12),
    secret=st.text(base62, min_size=43, max_size=43),
)
def test_every_well_formed_key_parses(key_id: str, secret: str) -> None:
    assert parse_key_id(_key(key_id, secret)) == key_id


@pytest.mark.parametrize(
    "text",
    [
        "",
        "ssk_",
        _key() + "\n",  # "$" in a regex would accept this
        "\n" + _key(),
        " " + _key(),
        _key() + " ",
        _key() + "x",
        _key(secret="s" * 42),
        _key(key_id="AbCdEfGhIjK"),
        _key(key_id="AbCdEfGhIjKlm"),
        "SSK_" + _key()[4:],
        "sk_" + _key()[4:],
        _key().replace("_", "-"),
        _key(key_id="AbCdEfGhIj-l"),
        _key(secret="s" * 42 + "/"),
        _key(
            key_id="\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669AB"
        ),  # Arabic digits
        _key(secret="é" * 43),
        "x" * 129,
        _key() * 3,
    ],
)
def test_parse_rejects_anything_not_exactly_a_key(text: str) -> None:
    assert parse_key_id(text) is None


@given(st.text(max_size=300))
def test_parse_never_raises_and_only_accepts_keys(text: str) -> None:
    key_id = parse_key_id(text)
    if key_id is not None:
        assert text == _key(key_id, text[-43:])
        assert set(text[4:16] + text[17:]) <= set(BASE62_ALPHABET)


def test_key_hash_is_hmac_sha256_keyed_by_the_server_secret() -> None:
    key = generate_key().key
    digest = key_hash(b"a" * 32, key)
    assert len(digest) == 32
    assert key_hash(b"a" * 32, key) == digest
    assert key_hash(b"b" * 32, key) != digest
    assert key_hash(b"a" * 32, key[:-1] + ("0" if key[-1] != "0" else "1")) != digest


def test_mask_shows_id_and_last_four_only() -> None:
    generated = generate_key()
    masked = mask_key(generated.key)
    secret = generated.key.split("_")[2]
    assert masked == f"ssk_{generated.key_id}_…{secret[-4:]}"
    assert secret[:-4] not in masked


def test_mask_of_malformed_text_shows_nothing_of_it() -> None:
    assert mask_key("hunter2-password") == "ssk_***"


def test_redact_replaces_every_key_in_text() -> None:
    first, second = generate_key(), generate_key()
    line = f"publish rtmp://host/live/{first.key} then key={second.key}, done"
    redacted = redact(line)
    assert redacted == (
        f"publish rtmp://host/live/ssk_{first.key_id}_*** then key=ssk_{second.key_id}_***, done"
    )


def test_redact_removes_secret_characters_glued_to_a_key() -> None:
    generated = generate_key()
    redacted = redact(f"x{generated.key}EXTRA tail")
    assert redacted == f"xssk_{generated.key_id}_*** tail"


def test_redact_catches_keys_in_a_tc_url_and_an_app_name() -> None:
    generated = generate_key()
    for url in (
        f"rtmp://host/live?key={generated.key}&x=1",
        f"rtmp://host/live/{generated.key}",
        f"rtmps://host:443/{generated.key}/live",
    ):
        assert generated.key[17:] not in redact(url)
        assert f"ssk_{generated.key_id}_***" in redact(url)


@given(
    key_id=st.text(base62, min_size=12, max_size=12),
    secret=st.text(base62, min_size=43, max_size=43),
    kept=st.integers(1, 43),
)
def test_redact_catches_a_key_cut_short(key_id: str, secret: str, kept: int) -> None:
    """A client's app name truncated for a log line still holds most of the secret."""
    assert redact(f"app 'live/{_key(key_id, secret[:kept])}") == f"app 'live/ssk_{key_id}_***"


def test_redact_leaves_other_text_alone() -> None:
    text = "ssk_ is our prefix; ssk_short_key is not a key"
    assert redact(text) == text


@given(
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    key_id=st.text(base62, min_size=12, max_size=12),
    secret=st.text(base62, min_size=43, max_size=43),
)
def test_redact_never_leaves_a_secret_behind(
    before: str, after: str, key_id: str, secret: str
) -> None:
    redacted = redact(before + _key(key_id, secret) + after)
    assert secret not in redacted
    assert f"ssk_{key_id}_***" in redacted
