"""Server text is printed only after every encoding of every secret is removed."""

from __future__ import annotations

import pytest

from tap_asana_vl.redaction import REDACTED, printable, redact, safe_text
from tests.conftest import secret_encodings

SECRET = "cs/+=:~ é secret"  # every character class that encodings change


@pytest.mark.parametrize("form", secret_encodings(SECRET))
def test_every_encoding_of_a_secret_is_redacted(form):
    text = f"bad request: {form}&next=1"
    redacted = redact(text, [SECRET])
    assert REDACTED in redacted
    for encoded in secret_encodings(SECRET):
        assert encoded not in redacted


def test_short_and_missing_values_are_not_redacted():
    assert redact("id abc", ["abc", None, ""]) == "id abc"


def test_control_characters_and_escape_sequences_are_removed():
    text = "a\x1b[2J\x1b[31mred\x1b]0;pwned\x07 b\r\nINFO fake line\u202e\x00\x9b1m\x7f"
    assert printable(text) == "ared b INFO fake line"


def test_a_control_character_cannot_hide_a_secret():
    hidden = SECRET[:3] + "\x1b[0m" + SECRET[3:]
    assert SECRET not in safe_text(hidden, [SECRET])
    assert REDACTED in safe_text(hidden, [SECRET])
