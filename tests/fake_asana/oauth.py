"""The fake's OAuth 2.0 server: Asana's authorization-code flow with PKCE, refresh tokens
and revocation (Asana's docs: OAuth), plus helpers that mint tokens for tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from . import scopes as scope_rules
from .wire import Response, dumps

_TEXT = "text/plain; charset=UTF-8"


@dataclass
class TokenRequest:
    """One call of the OAuth token endpoint (no secrets, codes or tokens are stored)."""

    grant_type: str | None
    client_id: str | None
    status: int
    error: str | None
    time: float


@dataclass
class _Client:
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uris: frozenset[str] | None
    #: Scopes the app is registered for; None: full permissions.
    scopes: frozenset[str] | None = None

    def accepts(self, redirect_uri: str) -> bool:
        if self.redirect_uris is not None:
            return redirect_uri in self.redirect_uris
        try:
            parts = urlsplit(redirect_uri)
            return parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1")
        except ValueError:
            return False


@dataclass
class _Grant:
    client_id: str
    redirect_uri: str
    challenge: str | None
    scopes: frozenset[str]
    user_gid: str
    expires_at: float


@dataclass
class AccessToken:
    """What an OAuth access token stands for."""

    client_id: str | None
    user_gid: str
    expires_at: float
    scopes: frozenset[str] = scope_rules.FULL_ACCESS_SCOPES


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class OAuthServer:
    """The OAuth half of ``FakeAsana`` (which calls :meth:`_init_oauth` and provides
    ``dataset``, ``now`` and ``_log_lock``)."""

    def _init_oauth(self) -> None:
        #: Lifetime in seconds of the access tokens the token endpoint issues.
        self.access_token_ttl = 3600
        #: The user refuses consent: authorize redirects with ``error=access_denied``.
        self.oauth_deny = False
        #: Each refresh also replaces the refresh token (Asana keeps it).
        self.rotate_refresh_tokens = False
        self.authorize_requests: list[dict[str, str]] = []
        self.token_requests: list[TokenRequest] = []
        self.access_tokens_issued = 0
        self._oauth_lock = threading.Lock()
        self._clients: dict[str, _Client] = {}
        self._codes: dict[str, _Grant] = {}
        self._access_tokens: dict[str, AccessToken] = {}
        # token -> (client, user, granted scopes)
        self._refresh_tokens: dict[str, tuple[str, str, frozenset[str]]] = {}

    # ------------------------------------------------------------------ test helpers
    def register_client(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: Iterable[str] | None = None,
        *,
        scopes: Iterable[str] | None = None,
    ) -> None:
        """Register an OAuth app.

        ``redirect_uris=None`` accepts any ``http://localhost:*`` or ``http://127.0.0.1:*``
        redirect URI (like a native app); otherwise only exact matches are accepted.
        ``scopes`` are the scopes the app is registered for (None: full permissions).
        """
        uris = frozenset(redirect_uris) if redirect_uris is not None else None
        registered = frozenset(scopes) if scopes is not None else None
        with self._oauth_lock:
            self._clients[client_id] = _Client(client_id, client_secret, uris, registered)

    def issue_refresh_token(
        self, client_id: str, user_gid: str | None = None, *, scopes: Iterable[str] | None = None
    ) -> str:
        """Mint a refresh token for a registered client (as if the user had authorized).

        ``scopes``: what the user granted (None: ``default``, full access).

        Raises:
            ValueError: if the client is not registered.
        """
        granted = frozenset(scopes) if scopes is not None else scope_rules.FULL_ACCESS_SCOPES
        with self._oauth_lock:
            if client_id not in self._clients:
                raise ValueError(f"unknown OAuth client: {client_id!r}")
            return self._new_refresh_token(client_id, user_gid or self.dataset.me_gid, granted)

    def revoke_refresh_token(self, token: str) -> None:
        """Revoke a refresh token (unknown tokens are ignored)."""
        with self._oauth_lock:
            self._refresh_tokens.pop(token, None)

    def issue_access_token(
        self,
        client_id: str | None = None,
        *,
        ttl: float | None = None,
        scopes: Iterable[str] | None = None,
    ) -> str:
        """Mint an OAuth access token directly (expires after ``ttl`` or the server TTL).

        ``scopes``: what it was granted (None: ``default``, full access).
        """
        granted = frozenset(scopes) if scopes is not None else scope_rules.FULL_ACCESS_SCOPES
        with self._oauth_lock:
            return self._new_access_token(client_id, self.dataset.me_gid, ttl, granted)

    def _new_refresh_token(self, client_id: str, user_gid: str, scopes: frozenset[str]) -> str:
        token = "fake-refresh-" + secrets.token_hex(20)
        self._refresh_tokens[token] = (client_id, user_gid, scopes)
        return token

    def _new_access_token(
        self, client_id: str | None, user_gid: str, ttl: float | None, scopes: frozenset[str]
    ) -> str:
        token = "fake-access-" + secrets.token_hex(20)
        lifetime = self.access_token_ttl if ttl is None else ttl
        self._access_tokens[token] = AccessToken(client_id, user_gid, self.now() + lifetime, scopes)
        self.access_tokens_issued += 1
        return token

    # ------------------------------------------------------------------ endpoints
    def _authorize(self, query: dict[str, list[str]]) -> Response:
        params = {k: v[0] for k, v in query.items()}
        with self._log_lock:
            self.authorize_requests.append(params)
        redirect_uri = params.get("redirect_uri", "")
        with self._oauth_lock:
            client = self._clients.get(params.get("client_id", ""))
            # A bad client or redirect URI gets a page, not a redirect (Asana's docs).
            if client is None:
                return Response(
                    400, b"Error: invalid client_id. The app could not be found.", _TEXT
                )
            if not redirect_uri or not client.accepts(redirect_uri):
                message = b"Error: The redirect_uri parameter does not match a valid redirect URL"
                return Response(400, message + b" for this app.", _TEXT)
            result = self._authorize_result(client, params)
        if params.get("state") is not None:
            result["state"] = params["state"]
        separator = "&" if urlsplit(redirect_uri).query else "?"
        return Response(302, b"", None, {"Location": redirect_uri + separator + urlencode(result)})

    def _authorize_result(self, client: _Client, params: dict[str, str]) -> dict[str, str]:
        challenge = params.get("code_challenge")
        method = params.get("code_challenge_method")
        requested = scope_rules.parse_scope_param(params.get("scope"))
        if self.oauth_deny:
            return {"error": "access_denied"}
        if params.get("response_type") != "code":
            description = "This fake supports response_type=code only."
            return {"error": "unsupported_response_type", "error_description": description}
        if method not in (None, "S256") or (method is not None and not challenge):
            description = "code_challenge_method must be S256, with a code_challenge."
            return {"error": "invalid_request", "error_description": description}
        refused = scope_rules.authorize_error(requested, client.scopes)
        if refused:
            return refused
        code = "fake-code-" + secrets.token_hex(16)
        self._codes[code] = _Grant(
            client_id=client.client_id,
            redirect_uri=params["redirect_uri"],
            challenge=challenge,
            scopes=frozenset(requested),
            user_gid=self.dataset.me_gid,
            expires_at=self.now() + 600,
        )
        return {"code": code}

    def _form(self, headers: Any, body: bytes) -> dict[str, str]:
        try:
            pairs = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            pairs = {}
        form = {k: v[0] for k, v in pairs.items()}
        authorization = headers.get("Authorization") or ""
        if authorization[:6].lower() == "basic " and "client_id" not in form:
            # RFC 6749 client_secret_basic, in case a client prefers it.
            try:
                user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
                form["client_id"], form["client_secret"] = user, password
            except (ValueError, UnicodeDecodeError):
                pass
        return form

    def _token(self, headers: Any, body: bytes, received: float) -> Response:
        form = self._form(headers, body)
        with self._oauth_lock:
            status, payload = self._token_grant(form)
        record = TokenRequest(
            form.get("grant_type"), form.get("client_id"), status, payload.get("error"), received
        )
        with self._log_lock:
            self.token_requests.append(record)
        no_store = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        return Response(status, dumps(payload), headers=no_store)

    def _client(self, form: dict[str, str]) -> _Client | None:
        """The client whose id and secret the form carries (None: authentication failed)."""
        client = self._clients.get(form.get("client_id") or "")
        secret = form.get("client_secret") or ""
        if client is None or not hmac.compare_digest(client.client_secret, secret):
            return None
        return client

    def _token_grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        def fail(status: int, error: str, description: str) -> tuple[int, dict[str, Any]]:
            return status, {"error": error, "error_description": description}

        grant_type = form.get("grant_type")
        if not grant_type:
            return fail(400, "invalid_request", "The grant_type parameter is missing.")
        if grant_type not in ("authorization_code", "refresh_token"):
            return fail(400, "unsupported_grant_type", f"Unsupported grant_type: {grant_type}")
        client_id = form.get("client_id") or ""
        if not client_id or not form.get("client_secret"):
            return fail(400, "invalid_request", "client_id and client_secret are required.")
        if self._client(form) is None:
            return fail(401, "invalid_client", "Client authentication failed.")

        refresh_token: str | None = None
        if grant_type == "authorization_code":
            code, redirect_uri = form.get("code"), form.get("redirect_uri")
            if not code or not redirect_uri:
                return fail(400, "invalid_request", "code and redirect_uri are required.")
            grant = self._codes.pop(code, None)  # single use, even if the exchange fails
            if grant is None or grant.expires_at <= self.now():
                return fail(400, "invalid_grant", "The authorization code is invalid or expired.")
            if grant.client_id != client_id:
                return fail(400, "invalid_grant", "The code was issued to another client.")
            if grant.redirect_uri != redirect_uri:
                return fail(400, "invalid_grant", "redirect_uri does not match the authorize call.")
            if grant.challenge is not None:
                verifier = form.get("code_verifier")
                if not verifier:
                    return fail(400, "invalid_request", "code_verifier is required (PKCE).")
                computed = _b64(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
                if not hmac.compare_digest(computed, grant.challenge):
                    return fail(400, "invalid_grant", "PKCE verification failed.")
            user_gid, granted = grant.user_gid, grant.scopes
            refresh_token = self._new_refresh_token(client_id, user_gid, granted)
        else:
            presented = form.get("refresh_token")
            if not presented:
                return fail(400, "invalid_request", "The refresh_token parameter is missing.")
            owner = self._refresh_tokens.get(presented)
            if owner is None or owner[0] != client_id:
                return fail(400, "invalid_grant", "The refresh token is invalid or revoked.")
            _, user_gid, granted = owner
            if self.rotate_refresh_tokens:
                del self._refresh_tokens[presented]
                refresh_token = self._new_refresh_token(client_id, user_gid, granted)

        user = self.dataset.users.get(user_gid, {})
        payload: dict[str, Any] = {
            "access_token": self._new_access_token(client_id, user_gid, None, granted),
            "expires_in": self.access_token_ttl,
            "token_type": "bearer",
        }
        if refresh_token is not None:
            payload["refresh_token"] = refresh_token
        payload["data"] = {
            "id": int(user_gid) if user_gid.isdigit() else 0,
            "gid": user_gid,
            "name": user.get("name"),
            "email": user.get("email"),
        }
        return 200, payload

    def _revoke(self, headers: Any, body: bytes) -> Response:
        form = self._form(headers, body)
        with self._oauth_lock:
            if self._client(form) is None:
                payload = {
                    "error": "invalid_client",
                    "error_description": "Client authentication failed.",
                }
                return Response(401, dumps(payload))
            if not form.get("token"):
                payload = {"error": "invalid_request", "error_description": "token is required."}
                return Response(400, dumps(payload))
            # 200 whether or not the token was known (as Asana documents).
            self._refresh_tokens.pop(form["token"], None)
        return Response(200, b"")
