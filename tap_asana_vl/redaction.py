"""Make text that came from a server (or from a user) safe to print.

Token endpoints, proxies and OAuth redirects may echo what they were sent: the client
secret, the refresh token, the authorization code or the PKCE verifier, in the form
they travelled in (URL-encoded form fields, a JSON string, a base64 Basic
Authorization header).  Both the tap and ``tap-asana-vl-auth`` print such text only
through :func:`safe_text`, which removes terminal control sequences and every encoding
of every secret.

Only the standard library is used: ``tap-asana-vl-auth`` imports this module.
"""

from __future__ import annotations

import base64
import json
import re
import unicodedata
import urllib.parse
from collections.abc import Iterable

__all__ = ["REDACTED", "printable", "redact", "safe_text"]

REDACTED = "[redacted]"

# Shorter values would redact ordinary words; no real secret is this short.
MIN_SECRET_LENGTH = 4
# A base64 fragment shorter than this is too likely to occur by chance.
MIN_BASE64_CORE = 8

# ANSI escape sequences as a whole (CSI, OSC, other ESC-introduced), so no "[31m"
# debris is left behind; any remaining control character is dropped one by one.
_ESCAPE_SEQUENCE = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, erase
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC: window title, hyperlinks
    r"|\x1b[@-Z\\-_]"  # other two-character sequences
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)
_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")


def printable(text: str) -> str:
    """Return ``text`` on one line without control or format characters.

    Escape sequences are removed, line breaks and tabs become spaces, and other
    control (Cc), format (Cf, e.g. bidirectional overrides) and separator
    characters are dropped, so server text cannot move the cursor, recolour or
    retitle the terminal, or fake further log lines.
    """
    text = _ESCAPE_SEQUENCE.sub("", str(text))
    kept = []
    for char in text:
        if char.isspace():
            kept.append(" ")
        elif unicodedata.category(char) not in {"Cc", "Cf", "Cs", "Zl", "Zp"}:
            kept.append(char)
    return " ".join("".join(kept).split())


def _base64_cores(raw: bytes) -> set[str]:
    """Substrings every base64 encoding containing ``raw`` must contain.

    Inside a longer payload (``client_id:client_secret`` in a Basic header) the
    secret can start at any of three byte offsets; for each, keep only the base64
    characters determined by the secret's bytes alone.
    """
    cores: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode("ascii")
        whole_groups = (offset + len(raw)) // 3
        # Characters of the first group mix in the prefix, those of a last partial
        # group depend on what follows the secret.
        core = encoded[4 if offset else 0 : whole_groups * 4]
        if len(core) >= MIN_BASE64_CORE:
            cores.add(core)
            cores.add(core.replace("+", "-").replace("/", "_"))  # URL-safe alphabet
    return cores


def _patterns(secret: str) -> Iterable[str]:
    """Regular expressions matching ``secret`` in each encoding it may travel in."""
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret),
        urllib.parse.quote_plus(secret),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(secret)[1:-1].replace("/", "\\/"),
        repr(secret)[1:-1],
    }
    for form in forms:
        # Percent escapes may come back in lower case.
        yield _PERCENT_ESCAPE.sub(lambda m: f"%(?i:{m.group(0)[1:]})", re.escape(form))
    for core in _base64_cores(secret.encode("utf-8")):
        yield re.escape(core)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each secret in ``text``, in any of its encodings.

    Covers the raw value, URL encoding (``quote`` and ``quote_plus``, either case of
    hex digits), JSON and Python string escaping, and standard or URL-safe base64 at
    any alignment.  Values shorter than ``MIN_SECRET_LENGTH`` are ignored.
    """
    patterns = sorted(
        {p for s in secrets if s and len(s) >= MIN_SECRET_LENGTH for p in _patterns(s)},
        key=len,
        reverse=True,  # longest first, so a form is not half-replaced by a shorter one
    )
    if not patterns:
        return text
    return re.sub("|".join(patterns), REDACTED, text)


def safe_text(text: object, secrets: Iterable[str | None] = (), limit: int = 300) -> str:
    """``text`` made fit for a log line or terminal: printable, redacted, at most ``limit``.

    Control characters go first, so one inserted into a secret cannot hide it from
    redaction; the text is cut last, so a cut cannot leave half a secret behind.
    """
    secrets = list(secrets)
    cleaned = redact(printable(str(text)), secrets)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."
