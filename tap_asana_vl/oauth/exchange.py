"""PKCE, the authorization URL, and the exchange of the code for tokens."""

from __future__ import annotations

import base64
import hashlib
import secrets
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests

from tap_asana_vl.auth import describe_redirect
from tap_asana_vl.oauth.common import (
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    PROG,
    AuthFailedError,
)
from tap_asana_vl.redaction import printable, safe_text

__all__ = [
    "TokenResponse",
    "build_authorize_url",
    "exchange_code",
    "make_pkce_pair",
    "pkce_challenge",
]

TOKEN_REQUEST_TIMEOUT = 60.0


def make_pkce_pair() -> tuple[str, str]:
    """Return a new PKCE ``(code_verifier, code_challenge)`` pair (RFC 7636, S256).

    The verifier is 86 characters of the unreserved set (within the 43-128
    allowed); the challenge is BASE64URL(SHA256(verifier)) without padding.
    """
    verifier = secrets.token_urlsafe(64)
    return verifier, pkce_challenge(verifier)


def pkce_challenge(verifier: str) -> str:
    """Return the S256 code challenge of a PKCE verifier."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def build_authorize_url(
    authorize_url: str,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    code_challenge: str,
    scopes: Sequence[str],
) -> str:
    """Return Asana's authorization URL for the authorization-code + PKCE flow.

    Query parameters already in ``authorize_url`` are kept.
    """
    parts = urllib.parse.urlsplit(authorize_url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    query += [
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("response_type", "code"),
        ("state", state),
        ("code_challenge_method", "S256"),
        ("code_challenge", code_challenge),
        ("scope", " ".join(scopes)),
    ]
    encoded = urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
    return urllib.parse.urlunsplit(parts._replace(query=encoded))


@dataclass(frozen=True)
class TokenResponse:
    """The parts of Asana's token response we use; secrets stay out of repr."""

    refresh_token: str = field(repr=False)
    access_token: str = field(default="", repr=False)
    user_name: str | None = None
    user_email: str | None = None
    user_gid: str | None = None


_TOKEN_ERROR_HINTS = {
    "invalid_client": (
        "Asana rejected the client credentials (invalid_client): check the client ID "
        f"and secret (--client-id/--client-secret, {ENV_CLIENT_ID}/{ENV_CLIENT_SECRET}) "
        "against the app in Asana's developer console"
    ),
    "invalid_grant": (
        "Asana rejected the authorization code (invalid_grant): it expired or was "
        "already used, or the redirect URI differs from the one used to authorize; "
        f"re-run {PROG}"
    ),
    "unauthorized_client": (
        "the app may not use the authorization-code grant (unauthorized_client): "
        "check the app's OAuth settings in Asana's developer console"
    ),
    "unsupported_grant_type": (
        "the token endpoint does not support this grant (unsupported_grant_type): check --token-url"
    ),
    "invalid_scope": (
        "Asana refused the requested scopes (invalid_scope): enable them for the app "
        "in Asana's developer console or choose others with --scope"
    ),
    "invalid_request": (
        "the token endpoint rejected the request as malformed (invalid_request): "
        "check --token-url and --redirect-uri"
    ),
}


def exchange_code(
    token_url: str,
    *,
    client_id: str,
    client_secret: str,
    redirect_uri: str,
    code: str,
    code_verifier: str,
    timeout: float = TOKEN_REQUEST_TIMEOUT,
    session: requests.Session | None = None,
) -> TokenResponse:
    """Exchange an authorization code for tokens at ``token_url``.

    Raises:
        AuthFailedError: the endpoint cannot be reached, answers with an OAuth
            error (RFC 6749 section 5.2) or without a refresh token.  Messages
            name what to fix and never contain secrets.

    """
    form = {
        "grant_type": "authorization_code",
        "client_id": client_id,
        "client_secret": client_secret,
        "redirect_uri": redirect_uri,
        "code": code,
        "code_verifier": code_verifier,
    }
    post = session.post if session is not None else requests.post
    try:
        response = post(
            token_url,
            data=form,
            headers={"Accept": "application/json"},
            timeout=timeout,
            # Following would re-post the secret, the code and the verifier elsewhere.
            allow_redirects=False,
        )
    except requests.exceptions.Timeout as exc:
        raise AuthFailedError(
            f"the token endpoint {token_url} did not answer within {timeout:g} s; "
            f"check your network and re-run {PROG}"
        ) from exc
    except requests.exceptions.RequestException as exc:
        raise AuthFailedError(
            f"could not connect to the token endpoint {token_url} "
            f"({type(exc).__name__}); check --token-url and your network, then re-run "
            f"{PROG}"
        ) from exc

    if 300 <= response.status_code < 400:
        raise AuthFailedError(
            f"the token endpoint {token_url} answered with a {describe_redirect(response)}; "
            "it was not followed, so the client secret and the code were not sent on. Pass "
            f"the token endpoint itself with --token-url and re-run {PROG}"
        )
    try:
        payload: Any = response.json()
    except ValueError:
        payload = None

    if response.ok and isinstance(payload, dict) and payload.get("refresh_token"):
        user = payload.get("data") if isinstance(payload.get("data"), dict) else {}
        return TokenResponse(
            refresh_token=str(payload["refresh_token"]),
            access_token=str(payload.get("access_token") or ""),
            user_name=_optional_str(user.get("name")),
            user_email=_optional_str(user.get("email")),
            user_gid=_optional_str(user.get("gid") or user.get("id")),
        )
    raise AuthFailedError(
        _failure_message(token_url, response, payload, (client_secret, code, code_verifier))
    )


def _failure_message(
    token_url: str, response: requests.Response, payload: Any, secret_values: Sequence[str]
) -> str:
    """One line on a failed exchange; server text is redacted of every secret sent."""
    where = f"{token_url} answered HTTP {response.status_code}"
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        error = payload["error"]
        description = payload.get("error_description")
        detail = f" [Asana: {safe_text(description, secret_values)}]" if description else ""
        hint = _TOKEN_ERROR_HINTS.get(error)
        if hint is None:
            hint = f"the token request failed ({safe_text(error, secret_values)}); re-run {PROG}"
        return f"{hint}{detail} ({where})"
    if isinstance(payload, dict) and isinstance(payload.get("errors"), list) and payload["errors"]:
        first = payload["errors"][0]
        message = first.get("message") if isinstance(first, dict) else first
        return f"the token request failed: {safe_text(message, secret_values)} ({where})"
    if response.ok:
        return f"the token response has no refresh_token ({where}); check --token-url"
    kind = "JSON" if payload is not None else "not JSON"
    return (
        f"unexpected answer from the token endpoint ({where}, {kind}); check "
        f"--token-url, or try again later"
    )


def _optional_str(value: object) -> str | None:
    """Return ``value`` as a non-empty printable string, or None.

    The user's name and email are printed: server text, so without control characters.
    """
    if value is None:
        return None
    text = printable(str(value))
    return text or None
