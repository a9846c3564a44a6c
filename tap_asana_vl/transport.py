"""The HTTP transport: how a prepared request becomes an answer from Asana, or an error.

One ``Transport`` serves every stream and thread of a run:

- **one session** whose connection pool holds a connection per worker thread, and whose
  timeout bounds a whole response (see ``session``);
- **pacing** by the shared ``RateLimiter``, **requests in flight** bounded by the shared
  ``InFlightLimit`` (which this module tells each answer's latency, 429s and transient
  failures; see ``concurrency``), and the **circuit breaker** of ``RunControl``;
- **retries**: 429 after ``Retry-After`` (never counted as a try), one forced OAuth
  refresh after a 401, exponential backoff with jitter for 5xx, timeouts, resets and
  broken bodies, at most ``max_retries`` times;
- **classification** of every answer into the few exception types of ``errors``.

What a refusal means (skip one object, or fail) is the stream's policy, not this module's.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
import typing as t
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import requests
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_asana_vl.auth import AsanaAuthError, token_of
from tap_asana_vl.errors import (
    ExpiredOffsetError,
    RateLimitedError,
    RefusedError,
    ScopeMissingError,
    SyncTokenRefusedError,
    TokenRejectedError,
)
from tap_asana_vl.scopes import mentions_scope
from tap_asana_vl.session import let_go_of_body, new_session

if t.TYPE_CHECKING:
    from collections.abc import Callable

    from tap_asana_vl.auth import AsanaAuthenticator
    from tap_asana_vl.concurrency import InFlightLimit
    from tap_asana_vl.rate_limit import RateLimiter
    from tap_asana_vl.run_control import RunControl


# Transient failures worth retrying with backoff.
RETRIABLE_ERRORS = (
    RetriableAPIError,
    ConnectionResetError,
    requests.exceptions.Timeout,
    requests.exceptions.ConnectionError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
MAX_BACKOFF_SECONDS = 60.0
# 429s are retried as long as Asana asks, but one request refused this many times in a
# row, or kept waiting this long in total, means something else holds the quota.
MAX_CONSECUTIVE_429 = 60
MAX_RATE_LIMITED_SECONDS = 900.0
# A Retry-After longer than this is capped (a misbehaving proxy could say "a day").
MAX_RETRY_AFTER_SECONDS = 900.0
# Query parameters that shape pages rather than say what is listed.
LISTING_PARAMS = frozenset({"limit", "offset", "opt_fields"})
# Statuses meaning "this object is not there for you", before a stream's skip policy.
REFUSED_STATUSES = frozenset({400, 402, 403, 404})


def backoff_seconds(failures: int) -> float:
    """Wait before retry number ``failures``: 1, 2, 4 … 60 s, with jitter (50-100 %)."""
    base = min(MAX_BACKOFF_SECONDS, 2.0 ** (failures - 1))
    return base * random.uniform(0.5, 1.0)  # noqa: S311 (jitter, not crypto)


class RequestStats:
    """What the requests of one stream cost, for the end-of-run summary (thread-safe)."""

    def __init__(self) -> None:
        """All counters start at zero."""
        self.lock = threading.Lock()
        self.requests = 0
        self.retries = 0
        self.rate_limited = 0
        self.token_refreshes_after_401 = 0


class Transport:
    """Sends requests for every stream of a run: pacing, retries, breaker, classification."""

    def __init__(
        self,
        *,
        url_base: str,
        authenticator: AsanaAuthenticator,
        rate_limiter: RateLimiter,
        in_flight: InFlightLimit,
        run_control: RunControl,
        max_retries: int,
        timeout: int,
        pool_size: int,
        on_request: Callable[[], None] | None = None,
    ) -> None:
        """Open the run's one session; ``on_request`` hears of every request sent."""
        self.authenticator = authenticator
        self.rate_limiter = rate_limiter
        self.in_flight = in_flight
        self.run_control = run_control
        self.max_retries = max_retries
        self.timeout = timeout
        self.session = new_session(url_base, pool_size)
        self._on_request = on_request

    def send(
        self,
        func: Callable[[requests.PreparedRequest, t.Any], requests.Response],
        prepared: requests.PreparedRequest,
        context: t.Any,
        *,
        label: str,
        stats: RequestStats,
        logger: logging.Logger,
    ) -> requests.Response:
        """Call ``func`` (sign, send, validate) until it answers, under Asana's retry rules.

        ``label`` names the request in messages (a stream's path template). Waits end at
        once when the run stops, or when the prefetch this thread works for is dropped.
        """
        failures = 0
        token_rejected = False
        rate_limited = 0
        rate_limited_seconds = 0.0
        while True:
            try:
                response = self._send_once(func, prepared, context, stats)
            except RateLimitedError as exc:
                self.run_control.succeeded()
                self.in_flight.congested()
                rate_limited += 1
                rate_limited_seconds += exc.retry_after
                if rate_limited > MAX_CONSECUTIVE_429 or (
                    rate_limited_seconds > MAX_RATE_LIMITED_SECONDS
                ):
                    msg = (
                        f"Asana (or a proxy) answered 429 to {label} {rate_limited} times in "
                        f"a row, asking to wait {rate_limited_seconds:.0f}s in all; giving up. "
                        "Another client may be using up this token's quota: lower "
                        "max_requests_per_minute or use a separate token."
                    )
                    raise FatalAPIError(msg) from None
                with stats.lock:
                    stats.rate_limited += 1
                logger.warning(
                    "Asana rate limit reached on %s; waiting %.1fs as it asks "
                    "(Retry-After) and slowing down",
                    label,
                    exc.retry_after,
                )
                self.rate_limiter.rate_limited(exc.retry_after)
            except TokenRejectedError as exc:
                if token_rejected:
                    # Two 401s in a row for this request, even if other requests
                    # succeed with the refreshed token: never loop on refreshes.
                    raise AsanaAuthError(str(exc)) from None
                token_rejected = True
                with stats.lock:
                    stats.token_refreshes_after_401 += 1
                logger.warning("Asana answered 401; refreshing the OAuth token once")
            except RETRIABLE_ERRORS as exc:
                failures += 1
                reason = _describe(exc)
                self.in_flight.congested()
                # No answer, or a 5xx: the run-wide breaker may stop everything.
                self.run_control.failed(reason)
                if failures > self.max_retries:
                    msg = f"Giving up on {label} after {failures} attempts: {reason}"
                    raise FatalAPIError(msg) from None
                wait = backoff_seconds(failures)
                with stats.lock:
                    stats.retries += 1
                logger.warning(
                    "Retrying %s in %.1fs (attempt %d failed: %s)", label, wait, failures, reason
                )
                # Never sleep past the moment the breaker would trip.
                self.run_control.pause(min(wait, self.run_control.seconds_left() + 0.01))
            except Exception:
                self.run_control.succeeded()  # Asana answered (4xx): it is up
                raise
            else:
                self.run_control.succeeded()
                return response

    def _send_once(
        self,
        func: Callable[[requests.PreparedRequest, t.Any], requests.Response],
        prepared: requests.PreparedRequest,
        context: t.Any,
        stats: RequestStats,
    ) -> requests.Response:
        """One attempt: a slot in flight, the pacer's turn, then the request itself.

        The slot is taken before the pacer's wait (see ``concurrency``); the latency
        told to the limit is the request's alone. A 429 or a failure without an answer
        tells nothing about latency (the caller reports them as congestion).
        """
        # The main thread (and a read-ahead) lists the parents whose children the workers
        # fetch: its request goes first, so that the workers always have the next work.
        first = self.run_control.goes_first()
        with self.in_flight.slot(check=lambda: self.run_control.pause(0), first=first):
            self.run_control.pause(self.rate_limiter.reserve())
            with stats.lock:
                stats.requests += 1
            if self._on_request is not None:
                self._on_request()
            sent = time.monotonic()
            try:
                response = func(prepared, context)
            except (RateLimitedError, *RETRIABLE_ERRORS):
                raise
            except Exception:
                self.in_flight.observe(time.monotonic() - sent)  # answered (a 4xx)
                raise
            self.in_flight.observe(time.monotonic() - sent)
            return response

    def check(self, response: requests.Response, *, listing: str) -> None:
        """Sort Asana's answer into done, or one of the exception types of ``errors``.

        ``listing`` names what was being listed, for a listing Asana will not return in
        full. A body that is not JSON or has no ``data`` is retriable (a proxy's page, a
        body cut off mid-transfer).
        """
        status = response.status_code
        if status == 429:
            raise RateLimitedError(retry_after_seconds(response))
        if status in {401, 403} and mentions_scope(asana_error_text(response)):
            # Not an expired or revoked token: a refresh cannot help.
            reason = f"{status}: {asana_error_text(response)}"
            raise ScopeMissingError(status, error_message(response), reason=reason)
        if status == 401:
            if self.authenticator.reject(token_of(response.request)):
                raise TokenRejectedError(self._unauthorized_message(response))
            raise AsanaAuthError(self._unauthorized_message(response))
        if status < 400:
            # The token works: a later 401 may force a refresh again.
            self.authenticator.accept(token_of(response.request))
        if status >= 500 or status in {408, 425}:
            raise RetriableAPIError(error_message(response), response)
        if status == 400:
            _raise_for_bad_request(response, listing)
        if status == 412:
            # GET /events: the sync token is missing or expired; the body holds a new one.
            try:
                body = response_body(response)
            except ValueError:
                body = {}
            sync = body.get("sync") if isinstance(body, dict) else None
            raise SyncTokenRefusedError(error_message(response), str(sync) if sync else None)
        if status in REFUSED_STATUSES:
            first_page = "offset=" not in (urlparse(response.request.url or "").query or "")
            raise RefusedError(status, error_message(response), first_page=first_page)
        if status >= 400:
            raise FatalAPIError(error_message(response))
        try:
            body = response_body(response)
        except ValueError:
            msg = f"Asana returned a body that is not valid JSON for {path_of(response)}"
            raise RetriableAPIError(msg, response) from None
        if not isinstance(body, dict) or not isinstance(body.get("data"), (list, dict)):
            msg = f"Asana returned no `data` for {path_of(response)}"
            raise RetriableAPIError(msg, response)
        let_go_of_body(response)  # from now on only the parsed body is read

    def _unauthorized_message(self, response: requests.Response) -> str:
        detail = asana_error_text(response)
        if getattr(self.authenticator, "is_oauth", False):
            return (
                f"Asana rejected the OAuth access token twice ({detail}). The app may have "
                "been removed from the workspace or the grant revoked: run "
                "`tap-asana-vl-auth` to authorize again."
            )
        return (
            f"Asana rejected the personal access token ({detail}): it is invalid or "
            "revoked. Create a new one in Asana (My Settings > Apps > Developer apps) and "
            "set TAP_ASANA_VL_ACCESS_TOKEN."
        )


def _raise_for_bad_request(response: requests.Response, listing: str) -> None:
    """Turn the 400s a sync can meet into actionable errors."""
    text = asana_error_text(response)
    lowered = text.lower()
    query = urlparse(response.request.url or "").query or ""
    if "offset=" in query and ("offset" in lowered or "pagination token" in lowered):
        raise ExpiredOffsetError(text)
    if "too large" in lowered or "upper limit" in lowered or "truncat" in lowered:
        # Never continue with a silently shortened listing.
        filters = {k: v[0] for k, v in parse_qs(query).items() if k not in LISTING_PARAMS}
        what = f"{path_of(response)} {filters}" if filters else path_of(response)
        msg = (
            f"Asana refused to list {listing} for {what} in full ({text}). The "
            "listing is too large for Asana; narrow it with workspace_gids / "
            "project_gids (or ask Asana support) — nothing was skipped silently."
        )
        raise FatalAPIError(msg)


# --- Responses --------------------------------------------------------------------------


def response_body(response: requests.Response) -> dict[str, t.Any]:
    """The response's JSON body, parsed once (numbers as ``Decimal``, kept exact)."""
    cached = getattr(response, "asana_body", None)
    if cached is None:
        cached = response.json(parse_float=Decimal)
        response.asana_body = cached  # type: ignore[attr-defined]
    return t.cast("dict[str, t.Any]", cached)


def error_message(response: requests.Response) -> str:
    """Status, path and Asana's own error text, never headers or tokens."""
    return (
        f"{response.status_code} {response.reason} for {path_of(response)}: "
        f"{asana_error_text(response)}"
    )


def path_of(response: requests.Response) -> str:
    """The request path without the query string (which may be long, never secret)."""
    return urlparse(response.url).path or "?"


def asana_error_text(response: requests.Response) -> str:
    """Asana's ``errors[].message`` texts, or a short note when the body has none."""
    try:
        body = json.loads(response.text)
    except ValueError:
        return "no JSON error body"
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list):
        messages = [str(e.get("message", "")) for e in errors if isinstance(e, dict)]
        if any(messages):
            return "; ".join(m for m in messages if m)
    return "no error message"


def retry_after_seconds(response: requests.Response, default: float = 30.0) -> float:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date).

    HTTP dates (RFC 9110's IMF-fixdate) are parsed by the standard library's
    ``email.utils``, which implements exactly that format.
    """
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return default
    return min(max(0.0, seconds), MAX_RETRY_AFTER_SECONDS)


def _describe(exc: BaseException) -> str:
    """A short reason for logs: our own messages, or the exception type (URLs left out)."""
    if isinstance(exc, RetriableAPIError):
        return str(exc)
    return type(exc).__name__
