"""Authentication for Asana: personal access tokens and OAuth 2.0 refresh tokens.

One authenticator is built per tap run and shared by every stream (and thread), so a
single OAuth access token is minted and refreshed for the whole sync.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import typing as t
from urllib.parse import urlsplit

import requests
from singer_sdk.authenticators import APIAuthenticatorBase, OAuthAuthenticator
from singer_sdk.exceptions import RetriableAPIError

from tap_asana_vl.asana_urls import OAUTH_TOKEN_URL as DEFAULT_OAUTH_TOKEN_URL
from tap_asana_vl.redaction import safe_text
from tap_asana_vl.sdk_adapter import oauth_session
from tap_asana_vl.timestamps import now

if t.TYPE_CHECKING:
    from collections.abc import Mapping

# Asana access tokens live 3600 s. Refreshing this long before expiry keeps a request that
# is signed just before the deadline (and then waits for the rate limiter or a retry)
# from reaching Asana with a dead token.
EXPIRY_MARGIN_SECONDS = 300

REAUTHORIZE_HINT = (
    "Run `tap-asana-vl-auth` to authorize again and store a fresh refresh token "
    "(TAP_ASANA_VL_REFRESH_TOKEN), then re-run the sync."
)

logger = logging.getLogger(__name__)


# Token endpoint answers that say "try again later", not "your credentials are wrong".
RETRIABLE_TOKEN_STATUSES = frozenset({408, 425, 429})


class AsanaAuthError(Exception):
    """Asana refused our credentials (or the token URL is wrong); retrying cannot help."""


class TokenEndpointUnavailableError(RetriableAPIError):
    """The token endpoint failed transiently (5xx, timeout); retried like an API call.

    A ``RetriableAPIError``, so the request that needed the token backs off and tries
    again under the stream's retry policy (``max_retries``), then fails naming this.
    """


def _bearer(request: requests.PreparedRequest, token: str) -> requests.PreparedRequest:
    request.headers["Authorization"] = f"Bearer {token}"
    return request


def token_of(request: requests.PreparedRequest | None) -> str | None:
    """Return the bearer token a request was sent with, if any."""
    if request is None:
        return None
    header = request.headers.get("Authorization", "")
    return header.removeprefix("Bearer ") if header.startswith("Bearer ") else None


class AsanaPersonalTokenAuthenticator(APIAuthenticatorBase):
    """Signs requests with a personal access token; a 401 is always fatal."""

    is_oauth = False

    def __init__(self, *, token: str) -> None:
        """Keep the token; it is never logged."""
        super().__init__()
        self._token = token

    def authenticate_request(
        self,
        request: requests.PreparedRequest,
    ) -> requests.PreparedRequest:
        """Add the Authorization header."""
        return _bearer(request, self._token)

    def reject(self, token: str | None) -> bool:  # noqa: ARG002
        """A personal access token cannot be renewed: never retry."""
        return False

    def accept(self, token: str | None) -> None:
        """Nothing to remember: a personal access token is never refreshed."""


class AsanaOAuthAuthenticator(OAuthAuthenticator):
    """Exchanges an OAuth refresh token for short-lived access tokens.

    Differences from the SDK's base class, each for a reason:
    - tokens are refreshed ``EXPIRY_MARGIN_SECONDS`` before they expire;
    - refreshing is serialised by a lock, so concurrent requests refresh once;
    - ``reject()`` lets the stream force one refresh after a 401, and refuses a second
      401 on the refreshed token until ``accept()`` hears that it worked;
    - a token endpoint that fails transiently (5xx, timeout) raises a retriable error;
      one that refuses the grant raises an ``AsanaAuthError`` that says how to
      re-authorize; neither ever includes a secret, and redirects are not followed.
    """

    is_oauth = True

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        auth_endpoint: str = DEFAULT_OAUTH_TOKEN_URL,
        timeout: float = 60,
    ) -> None:
        """Keep the OAuth client settings; no request is made until first use."""
        super().__init__(
            auth_endpoint=auth_endpoint,
            client_id=client_id,
            client_secret=client_secret,
        )
        self.refresh_token = refresh_token
        self._timeout = timeout
        self._lock = threading.RLock()
        # True while the current access token came from a refresh forced by a 401 and
        # no answer has shown that Asana accepts it yet.
        self._forced = False
        self._force_pending = False
        self.refresh_count = 0

    @property
    def oauth_request_body(self) -> dict[str, str]:
        """The refresh-token grant, as Asana's token endpoint expects it."""
        return {
            "grant_type": "refresh_token",
            "client_id": self.client_id or "",
            "client_secret": self.client_secret or "",
            "refresh_token": self.refresh_token or "",
        }

    def is_token_valid(self) -> bool:
        """Whether the token is fresh enough to use, keeping a safety margin."""
        if self.access_token is None or self.last_refreshed is None:
            return False
        if not self.expires_in:
            return True
        margin = min(EXPIRY_MARGIN_SECONDS, self.expires_in / 4)
        age = now() - self.last_refreshed
        return age.total_seconds() < self.expires_in - margin

    def authenticate_request(
        self,
        request: requests.PreparedRequest,
    ) -> requests.PreparedRequest:
        """Add a valid access token, refreshing it first when needed."""
        with self._lock:
            if not self.is_token_valid():
                self.update_access_token()
            token = self.access_token
        return _bearer(request, token or "")

    def reject(self, token: str | None) -> bool:
        """Handle a 401 for ``token``: return True if the request should be retried.

        The first 401 for a token forces one refresh. A 401 for a token that was itself
        obtained by such a forced refresh, before any request succeeded with it, means
        Asana does not accept what we send, so the caller should fail instead of
        looping. Once the refreshed token has worked (``accept``), a later 401 -- e.g.
        the grant was re-issued minutes afterwards -- again forces one refresh.
        """
        with self._lock:
            if token != self.access_token:
                # Another thread already replaced the token the request carried.
                return True
            if self._forced:
                return False
            self.access_token = None
            self._force_pending = True
            return True

    def accept(self, token: str | None) -> None:
        """Asana answered a request signed with ``token`` without a 401: it works."""
        if not self._forced:
            return
        with self._lock:
            if token == self.access_token:
                self._forced = False

    def update_access_token(self) -> None:
        """Exchange the refresh token for a new access token."""
        request_time = now()
        logger.info("Requesting a new Asana OAuth access token")
        try:
            response = oauth_session(self).post(
                self.auth_endpoint,
                data=self.oauth_request_body,
                timeout=self._timeout,
                # Following would re-post the client secret and refresh token to
                # wherever the redirect points.
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            msg = (
                f"the OAuth token endpoint {self.auth_endpoint} did not answer "
                f"({type(exc).__name__}); check the network and oauth_token_url"
            )
            raise TokenEndpointUnavailableError(msg) from None

        if 300 <= response.status_code < 400:
            msg = (
                f"The OAuth token endpoint {self.auth_endpoint} answered with a "
                f"{describe_redirect(response)}; it was not followed, so the client secret "
                "and refresh token stayed here. Set oauth_token_url to the token endpoint "
                "itself."
            )
            raise AsanaAuthError(msg)
        if response.status_code >= 500 or response.status_code in RETRIABLE_TOKEN_STATUSES:
            msg = (
                f"the OAuth token endpoint {self.auth_endpoint} answered HTTP "
                f"{response.status_code} (a failure on the server side, not of the "
                "credentials; see https://status.asana.com)"
            )
            raise TokenEndpointUnavailableError(msg, response)
        payload = _json_or_empty(response)
        if response.status_code != 200 or "access_token" not in payload:
            raise AsanaAuthError(
                _token_error_message(response.status_code, payload, self._secrets())
            )

        self.access_token = str(payload["access_token"])
        expires_in = payload.get("expires_in")
        self.expires_in = int(expires_in) if expires_in else None
        self.last_refreshed = request_time
        self._forced, self._force_pending = self._force_pending, False
        self.refresh_count += 1

        rotated = payload.get("refresh_token")
        if rotated and rotated != self.refresh_token:
            # Keep using the new one for the rest of this run; the stored one may have
            # been revoked by the rotation.
            self.refresh_token = str(rotated)
            logger.warning(
                "Asana returned a new refresh token. It is used for the rest of this run, "
                "but the stored TAP_ASANA_VL_REFRESH_TOKEN may stop working: %s",
                REAUTHORIZE_HINT,
            )

    def _secrets(self) -> tuple[str | None, ...]:
        """What must never appear in a message, in any encoding."""
        return (self.client_secret, self.refresh_token, self.access_token)


def describe_redirect(response: requests.Response) -> str:
    """``redirect (HTTP 307 to host)``: where a token endpoint tried to send us.

    Only the host is named: the rest of the Location is server text.
    """
    target = urlsplit(response.headers.get("Location", ""))
    host = safe_text(target.netloc, limit=100)
    return f"redirect (HTTP {response.status_code}{f' to {host}' if host else ''})"


def _json_or_empty(response: requests.Response) -> dict[str, t.Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _token_error_message(
    status: int, payload: Mapping[str, t.Any], secrets: tuple[str | None, ...]
) -> str:
    """Explain a failed token refresh without echoing anything secret.

    The endpoint's ``error`` is server text: a misbehaving one may echo the request
    (with the client secret and refresh token), or carry terminal escapes.
    """
    error = safe_text(payload.get("error", ""), secrets, limit=200) or f"HTTP {status}"
    if error == "invalid_grant":
        return (
            "Asana rejected the OAuth refresh token (invalid_grant): it was revoked, "
            f"expired or belongs to another app. {REAUTHORIZE_HINT}"
        )
    if status == 200:
        return (
            "The OAuth token endpoint answered without an access token: check that "
            "oauth_token_url is Asana's token endpoint."
        )
    if error == "invalid_client":
        return (
            "Asana rejected the OAuth client credentials (invalid_client): check the "
            "client_id and client_secret settings against your app in Asana's developer "
            "console."
        )
    return (
        f"Refreshing the Asana OAuth access token failed ({error}, HTTP {status}). "
        f"Check client_id, client_secret and refresh_token. {REAUTHORIZE_HINT}"
    )


AsanaAuthenticator = AsanaPersonalTokenAuthenticator | AsanaOAuthAuthenticator


def build_authenticator(config: Mapping[str, t.Any]) -> AsanaAuthenticator:
    """Pick the authenticator for a validated config, defaults filled (see ``TapAsanaVl``)."""
    # Secrets pasted from files often end with a newline; it would break the header.
    if config.get("access_token"):
        return AsanaPersonalTokenAuthenticator(token=str(config["access_token"]).strip())
    return AsanaOAuthAuthenticator(
        client_id=str(config["client_id"]).strip(),
        client_secret=str(config["client_secret"]).strip(),
        refresh_token=str(config["refresh_token"]).strip(),
        auth_endpoint=config["oauth_token_url"],
        timeout=float(config["request_timeout"]),
    )


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` names this machine (plain http is only acceptable there)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
