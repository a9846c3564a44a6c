"""OAuth scopes: which streams and fields the granted scopes can read.

Streams declare the scope of their endpoint (``required_scope``, None when Asana's spec
gives the endpoint no granular scope, so only a full-permission token can call it) and
the extra scopes of some fields (``field_scopes``). With a scoped OAuth token (setting
``oauth_scopes``, written by ``tap-asana-vl-auth``), streams the grant cannot read are
turned off before any request, and fields it cannot read are left out of ``opt_fields``
-- one warning per stream each time. When the scopes are not known, a 401/403 whose
message speaks of a scope turns the stream off at run time (see ``AsanaListing.validate_response``).
"""

from __future__ import annotations

import re
import typing as t

from singer_sdk.exceptions import ConfigValidationError

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Iterable, Mapping


class ScopedStream(t.Protocol):
    """What this module reads and sets on a stream (an ``AsanaStream``)."""

    name: str
    selected: bool
    child_streams: list[t.Any]
    logger: logging.Logger
    field_scopes: dict[str, tuple[str, ...]]
    #: Why the scopes keep the stream from being read (None: they don't).
    scope_off: str | None
    #: Fields the scopes cannot read (left out of its requests).
    scope_skipped_fields: frozenset[str]

    def requests_field(self, name: str) -> bool:
        """Whether the stream asks Asana for field ``name``."""


#: The scope of full access (what a token gets when no scope was requested).
FULL_ACCESS = "default"
#: Scope Asana requires for a task's ``memberships``, not in its published scope list.
SECTIONS_SCOPE = "project_sections:read"
AUTH_COMMAND = "tap-asana-vl-auth"


def granted_scopes(config: Mapping[str, t.Any]) -> frozenset[str] | None:
    """The scopes of a scoped OAuth token; None when unknown or full access.

    ``oauth_scopes`` is space or comma separated, as ``tap-asana-vl-auth`` writes it.
    Personal access tokens always have full access.
    """
    if config.get("access_token"):
        return None
    scopes = frozenset(re.split(r"[\s,]+", str(config.get("oauth_scopes") or "").strip())) - {""}
    if not scopes or FULL_ACCESS in scopes:
        return None
    return scopes


def mentions_scope(message: str) -> bool:
    """Whether an Asana error message blames the token's OAuth scopes."""
    return "scope" in message.lower()


def _hop(stream_type: t.Any) -> list[str]:
    """Scopes to read ``stream_type`` once its parent's records are in hand."""
    parent = stream_type.parent_stream_type
    if stream_type.from_parent_field and parent is not None:
        return list(parent.field_scopes.get(stream_type.from_parent_field, ()))
    return [stream_type.required_scope or FULL_ACCESS]


def _routes(stream_type: t.Any) -> list[list[str]]:
    """The scopes of each way the tap reaches ``stream_type``'s records.

    Parents are listed to reach a stream, so their scopes count too; ``default`` stands
    for "full permissions only". A stream that also sweeps each workspace is reached
    straight from the workspaces as well.
    """
    parent = stream_type.parent_stream_type
    if parent is None:
        return [_hop(stream_type)]
    routes = [_hop(stream_type) + route for route in _routes(parent)]
    if getattr(stream_type, "sweeps_each_workspace", False):
        root = parent
        while root.parent_stream_type is not None:
            root = root.parent_stream_type
        routes.append(_hop(stream_type) + _routes(root)[0])
    return [list(dict.fromkeys(route)) for route in routes]


def needed_scopes(stream_type: t.Any) -> list[str]:
    """Every scope needed to read ``stream_type`` through its parents."""
    return _routes(stream_type)[0]


def missing_scopes(stream_type: t.Any, granted: frozenset[str]) -> list[str]:
    """What ``granted`` lacks to read ``stream_type``: nothing if one way is granted."""
    lacking = [[s for s in route if s not in granted] for route in _routes(stream_type)]
    return [] if any(not missing for missing in lacking) else lacking[0]


def fix_hint(missing: Iterable[str]) -> str:
    """How to get scopes the grant lacks."""
    missing = list(missing)
    if missing == [SECTIONS_SCOPE]:
        return (
            f"re-authorize with `{AUTH_COMMAND} --sections-scope` (if the app is registered "
            f"for it) or `{AUTH_COMMAND} --full-access`"
        )
    return f"re-authorize with `{AUTH_COMMAND} --full-access` (an app with full permissions)"


def _describe(missing: list[str]) -> str:
    if FULL_ACCESS in missing:
        return "full permissions (its Asana endpoint has no granular OAuth scope)"
    return ", ".join(missing)


def apply_grant(streams: Iterable[ScopedStream], granted: frozenset[str]) -> None:
    """Turn off what ``granted`` cannot read, before any request, warning once per stream."""
    streams = list(streams)
    for stream in streams:
        missing = missing_scopes(type(stream), granted)
        if missing:
            stream.scope_off = f"the OAuth token lacks {_describe(missing)}"
            if stream.selected:
                stream.logger.warning(
                    "Skipping stream '%s': it needs %s, which the granted OAuth scopes "
                    "(setting oauth_scopes) do not include. Fix: %s, or deselect the stream.",
                    stream.name,
                    _describe(missing),
                    fix_hint(missing),
                )
            continue
        unreadable = {
            name: [s for s in scopes if s not in granted]
            for name, scopes in stream.field_scopes.items()
            if any(s not in granted for s in scopes)
        }
        stream.scope_skipped_fields = frozenset(unreadable)
        wanted = [name for name in unreadable if stream.selected and stream.requests_field(name)]
        if wanted:
            lacking = list(dict.fromkeys(s for name in wanted for s in unreadable[name]))
            stream.logger.warning(
                "Stream '%s': leaving out %s, which the granted OAuth scopes (setting "
                "oauth_scopes) do not include; they load as null. Fix: %s.",
                stream.name,
                ", ".join(f"{name} (needs {' '.join(unreadable[name])})" for name in wanted),
                fix_hint(lacking),
            )
    # A deselected parent read only for its children is not needed when none of its
    # selected descendants can be read.
    for stream in reversed(streams):
        if stream.scope_off is None and not stream.selected and not _live_below(stream):
            stream.scope_off = "no selected stream below it can be read with the OAuth scopes"
    selected = [stream for stream in streams if stream.selected]
    if selected and all(stream.scope_off for stream in selected):
        # A run that reads nothing must not look like a successful sync.
        msg = (
            "The granted OAuth scopes (setting oauth_scopes) can read none of the selected "
            f"streams (e.g. '{selected[0].name}': {selected[0].scope_off}). Fix: run "
            "`tap-asana-vl-auth` again (default scopes) or with --full-access."
        )
        raise ConfigValidationError(msg, errors=[msg])


def _live_below(stream: ScopedStream) -> bool:
    return any(
        child.scope_off is None and (child.selected or _live_below(child))
        for child in t.cast("list[ScopedStream]", stream.child_streams)
    )
