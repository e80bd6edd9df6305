"""Signature checks: each provider's scheme, constant-time matching, missing vs wrong."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from switchboard_ingest_social import signatures
from switchboard_ingest_social.signatures import Verdict

pytestmark = pytest.mark.unit

# RFC 4231, test case 2: HMAC-SHA256 with key "Jefe".
RFC4231_KEY = b"Jefe"
RFC4231_DATA = b"what do ya want for nothing?"
RFC4231_HEX = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_meta_signs_with_hex_hmac_sha256_of_the_raw_body() -> None:
    assert signatures.meta_signature(RFC4231_DATA, RFC4231_KEY) == f"sha256={RFC4231_HEX}"


def test_x_signs_with_base64_hmac_sha256_and_answers_crc_the_same_way() -> None:
    expected = "sha256=" + base64.b64encode(bytes.fromhex(RFC4231_HEX)).decode()
    assert signatures.x_signature(RFC4231_DATA, RFC4231_KEY) == expected
    challenge = "M2RkODJkZmMtYjlkYi00NmQ4LTk0MGUtM2JjYzkwM2Q4MjQ0"
    assert signatures.x_crc_response(challenge, RFC4231_KEY) == signatures.x_signature(
        challenge.encode(), RFC4231_KEY
    )
    # Text that is not shaped as X's tokens is never signed, whoever asks.
    with pytest.raises(ValueError, match="crc_token"):
        signatures.x_crc_response(RFC4231_DATA.decode(), RFC4231_KEY)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@given(value=JSON_VALUES, compact=st.booleans())
def test_no_json_text_is_ever_a_crc_token(value: Any, compact: bool) -> None:
    text = json.dumps(value, separators=(",", ":") if compact else None)
    assert not signatures.is_crc_token(text)
    with pytest.raises(ValueError, match="crc_token"):
        signatures.x_crc_response(text, b"consumer-secret")


@pytest.mark.parametrize(
    ("token", "answered"),
    [
        ("M2RkODJkZmMtYjlkYi00NmQ4LTk0MGUtM2JjYzkwM2Q4MjQ0", True),
        ("Zm9v+YmFy/Zm9v==", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("Zm9vYmE", False),
        ("12345678", False),  # a JSON number
        ("Zm9v YmFy", False),
        ('{"a":1}', False),
    ],
)
def test_crc_tokens_have_the_alphabet_and_length_of_x(token: str, answered: bool) -> None:
    assert signatures.is_crc_token(token) is answered


def test_missing_header_is_told_apart_from_a_wrong_one() -> None:
    body = b'{"object":"page","entry":[]}'
    assert signatures.match_meta(None, body, [b"s"]) is Verdict.MISSING
    assert signatures.match_meta("", body, [b"s"]) is Verdict.MISSING
    assert signatures.match_meta("sha256=00", body, [b"s"]) is Verdict.WRONG
    assert signatures.match_x(None, body, [b"s"]) is Verdict.MISSING


def test_the_matching_secret_among_several_is_returned() -> None:
    body = b'{"for_user_id":"1"}'
    header = signatures.x_signature(body, b"second")
    assert signatures.match_x(header, body, [b"first", b"second", b"third"]) == b"second"
    assert signatures.match_x(header, body, [b"first", b"third"]) is Verdict.WRONG
    # A Meta-style (hex) signature never passes as an X one, and the reverse.
    assert signatures.match_meta(header, body, [b"second"]) is Verdict.WRONG


@given(body=st.binary(max_size=512), flip=st.integers(min_value=0, max_value=511))
def test_any_change_to_the_body_breaks_the_signature(body: bytes, flip: int) -> None:
    header = signatures.meta_signature(body, b"app-secret")
    assert signatures.match_meta(header, body, [b"app-secret"]) == b"app-secret"
    if body:
        index = flip % len(body)
        tampered = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]
        assert signatures.match_meta(header, tampered, [b"app-secret"]) is Verdict.WRONG


def test_tokens_compare_exactly() -> None:
    assert signatures.token_matches("abc", b"abc")
    assert not signatures.token_matches("abd", b"abc")
    assert not signatures.token_matches("abc ", b"abc")
    assert not signatures.token_matches(None, b"abc")
