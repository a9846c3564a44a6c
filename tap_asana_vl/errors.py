"""The few ways a request to Asana can end other than with records.

The transport sorts every answer into one of these (or into the SDK's
``RetriableAPIError`` / ``FatalAPIError``, ``AsanaAuthError`` from ``auth``, and
``OutageError`` / ``StoppedError`` from ``run_control``); streams decide what a refusal
means for them (see ``AsanaStream.tolerated_statuses``).
"""

from __future__ import annotations

from singer_sdk.exceptions import FatalAPIError


class RefusedError(FatalAPIError):
    """Asana answered 400, 402, 403 or 404: it will not give this object or listing.

    Fatal unless the stream's skip policy tolerates the status; ``first_page`` tells a
    listing refused from the start from one cut off part-way.
    """

    def __init__(self, status: int, message: str, *, first_page: bool) -> None:
        """Keep the status and where in the listing it came."""
        super().__init__(message)
        self.status = status
        self.first_page = first_page


class SkippedObjectError(Exception):
    """One object (a workspace, project, task …) cannot be read; skip it, keep syncing."""

    def __init__(self, status: int, message: str) -> None:
        """Remember the status so the summary can group skips."""
        super().__init__(message)
        self.status = status


class ScopeMissingError(SkippedObjectError):
    """Asana refused a request for the token's OAuth scopes: the stream is off for the run."""

    def __init__(self, status: int, message: str, *, reason: str = "") -> None:
        """``reason`` is the short form kept as the stream's ``scope_off``."""
        super().__init__(status, message)
        self.reason = reason or message


class RateLimitedError(Exception):
    """Asana answered 429; retried after ``retry_after`` seconds (not counted as a try)."""

    def __init__(self, retry_after: float) -> None:
        """Keep the server-given wait."""
        super().__init__(f"rate limited, retry after {retry_after:g}s")
        self.retry_after = retry_after


class TokenRejectedError(Exception):
    """A 401 that one forced OAuth token refresh may cure (the message: if it does not)."""


class ExpiredOffsetError(Exception):
    """Asana no longer accepts the pagination token of a listing in progress."""


class PaginationLoopError(FatalAPIError):
    """Asana handed back a pagination token it had already given for this listing."""


class SyncTokenRefusedError(Exception):
    """Asana answered 412 to ``GET /events``: no sync token yet, or it is too old.

    Not a failure: ``sync`` is the fresh token Asana handed out with the refusal.
    """

    def __init__(self, message: str, sync: str | None) -> None:
        """Keep Asana's message and the fresh token."""
        super().__init__(message)
        self.sync = sync
