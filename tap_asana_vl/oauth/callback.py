"""What Asana's redirect back to us says: the code, or why there is none.

The redirect arrives at the listener (a request path) or is pasted in headless mode
(a URL, its query, or just the code).  Either way ``state`` must be this run's, and an
``error=...`` becomes one line saying what to do.
"""

from __future__ import annotations

import re
import secrets
import urllib.parse
from collections.abc import Mapping

from tap_asana_vl.oauth.common import PROG, AuthFailedError, ScopesRefusedError
from tap_asana_vl.redaction import safe_text

__all__ = [
    "MAX_PASTE_ATTEMPTS",
    "NotPastedCodeError",
    "callback_params",
    "parse_callback",
    "parse_pasted",
    "refused_scopes",
]

SCOPE_ERRORS = ("invalid_scope", "forbidden_scopes")
_SCOPE_NAME = re.compile(r"^[a-z_]+(:[a-z_]+)?$")
# Asana's codes look like ``1/1204…:0f3a…``: unreserved characters, ``/`` and ``:``.
_BARE_CODE = re.compile(r"[A-Za-z0-9._~+/:%-]{8,2048}")
# Pasted text that is (part of) a URL, not a code: a scheme, a query, a fragment.
_URL_MARKS = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/|^/|[?#=&]")
MAX_PASTE_ATTEMPTS = 3


class NotPastedCodeError(AuthFailedError):
    """What was pasted is neither the redirected URL nor a code; worth asking again."""


def callback_params(callback: str) -> dict[str, str]:
    """Return the OAuth parameters of a redirect URL, path or query string."""
    text = callback.strip()
    if "?" in text or "#" in text or "://" in text or text.startswith("/"):
        parts = urllib.parse.urlsplit(text)
        query, fragment = parts.query, parts.fragment
    else:
        query, fragment = text, ""
    params: dict[str, str] = {}
    # Some providers put the answer in the fragment; the query wins.
    for part in (fragment, query):
        params.update(urllib.parse.parse_qsl(part, keep_blank_values=True))
    return params


def refused_scopes(description: str) -> list[str]:
    """Scope names in Asana's ``error_description`` of a scope refusal.

    Asana quotes them in backticks, e.g. "forbidden_scopes: Your app is not allowed to
    request user authorization for `default identity` scopes."; otherwise any
    ``resource:action`` word counts.  May name groups (``identity``) that were not
    requested: callers match the result against what they asked for.
    """
    quoted = re.findall(r"`([^`]*)`", description)
    words = (
        [w for chunk in quoted for w in chunk.replace(",", " ").split()]
        if quoted
        else re.findall(r"\b[a-z_]+:[a-z_]+\b", description)
    )
    return list(dict.fromkeys(w for w in words if _SCOPE_NAME.match(w)))


def _describe_authorize_error(params: Mapping[str, str]) -> str:
    """Turn an ``error=...`` redirect into one line telling what to do."""
    error = params.get("error", "")
    description = params.get("error_description", "").strip()
    detail = f" ({safe_text(description)})" if description else ""
    if error == "access_denied":
        return (
            f"authorization was denied in Asana (access_denied){detail}; "
            f"re-run {PROG} and click Allow"
        )
    if error in SCOPE_ERRORS:
        refused = refused_scopes(description)
        named = f": {' '.join(refused)}" if refused else ""
        # Asana's description starts with the error code; don't say it twice.
        said = f" ({safe_text(description)})" if description.startswith(error) else ""
        return (
            f"Asana refused the requested scopes{named}{said or f' ({error}){detail}'}; "
            "enable them for the app in Asana's developer console, or re-run without them (--scope)"
        )
    if error == "unauthorized_client":
        return (
            f"the app may not use the authorization-code flow (unauthorized_client){detail}; "
            "check the app's OAuth settings in Asana's developer console"
        )
    return f"Asana returned an authorization error: {safe_text(error)}{detail}; re-run {PROG}"


def parse_callback(callback: str, expected_state: str) -> str:
    """Return the authorization code carried by Asana's redirect.

    ``callback`` is the URL the browser was redirected to (or its path and
    query, or just the query string).

    Raises:
        AuthFailedError: the ``state`` does not match (possible CSRF or a stale
            browser tab), Asana sent ``error=...``, or there is no code.

    """
    params = callback_params(callback)
    state = params.get("state")
    # An error redirect without state is reported as the error; anything else
    # must carry this run's state.
    state_required = not (state is None and "error" in params)
    if state_required and (
        state is None
        or not secrets.compare_digest(
            state.encode("utf-8", "surrogateescape"),
            expected_state.encode("utf-8", "surrogateescape"),
        )
    ):
        raise AuthFailedError(
            "the redirect's state parameter does not match this run "
            "(possible CSRF, or a stale browser tab from an earlier run); "
            f"close old Asana authorization tabs and re-run {PROG}"
        )
    if "error" in params:
        message = _describe_authorize_error(params)
        if params["error"] in SCOPE_ERRORS:
            refused = refused_scopes(params.get("error_description", ""))
            raise ScopesRefusedError(message, refused)
        raise AuthFailedError(message)
    code = params.get("code", "")
    if not code:
        raise AuthFailedError(
            f"the redirect carries no authorization code; re-run {PROG}",
        )
    return code


def parse_pasted(text: str, expected_state: str, redirect_uri: str) -> str:
    """Return the code from what the user pasted in headless mode.

    A full redirected URL (or its query) is checked like :func:`parse_callback`; a
    bare code is accepted as is, since there is no state to check.  Anything else
    -- a URL cut off before its ``code=``, a stray line -- raises
    :class:`NotPastedCodeError` and is never sent to Asana.
    """
    text = text.strip()
    if not text:
        raise NotPastedCodeError("nothing was pasted")
    host = urllib.parse.urlsplit(redirect_uri).hostname
    if _URL_MARKS.search(text) or (host and host in text.lower()):
        if not any(name in callback_params(text) for name in ("code", "error", "state")):
            raise NotPastedCodeError(
                "not a URL or code: that URL has no code= parameter (was it cut off?); "
                "copy the whole address from the browser"
            )
        return parse_callback(text, expected_state)
    if not _BARE_CODE.fullmatch(text):
        raise NotPastedCodeError(
            "not a URL or code: paste the whole redirected URL from the browser's "
            "address bar, or just the value of its code= parameter"
        )
    return urllib.parse.unquote(text)
