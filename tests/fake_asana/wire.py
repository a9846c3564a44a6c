"""What the fake puts on the wire: a response, JSON as Asana encodes it, Asana's errors."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

JSON_TYPE = "application/json; charset=UTF-8"
HELP = (
    "For more information on API status codes and how to handle them, "
    "read the docs on errors: https://developers.asana.com/docs/errors"
)
_PHRASE_WORDS = (
    ("sad", "happy", "sleepy", "brave", "tiny", "grumpy"),
    ("squid", "otters", "llamas", "pandas", "ducks", "moles"),
    ("snuggle", "dance", "wander", "giggle", "hum", "nap"),
    ("softly", "boldly", "quietly", "wildly", "slowly", "gently"),
)


@dataclass
class Response:
    """One HTTP answer (``content_type`` None: no Content-Type header)."""

    status: int
    body: bytes
    content_type: str | None = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


class ApiError(Exception):
    """An Asana error answer: status, ``errors[0].message`` and extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Keep what the answer is made of (``extra``: more top-level body keys)."""
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self) -> Response:
        """The answer Asana sends for this error."""
        body = {**error_body(self.status, self.message), **self.extra}
        return Response(self.status, dumps(body), JSON_TYPE, self.headers)


def dumps(payload: Any) -> bytes:
    """Compact UTF-8 JSON, as Asana sends it."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error_body(status: int, message: str) -> dict[str, Any]:
    """Asana's error envelope; 500s carry a ``phrase`` for support (Asana's docs: errors)."""
    error: dict[str, Any] = {"message": message, "help": HELP}
    if status == 500:
        words = [secrets.choice(group) for group in _PHRASE_WORDS]
        error["phrase"] = f"{secrets.randbelow(9) + 2} " + " ".join(words)
    return {"errors": [error]}
