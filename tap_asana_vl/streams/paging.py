"""How Asana's list endpoints are asked for fields and paged through.

``opt_fields`` names every property a listing returns (objects as dotted paths), and
pages are chained by opaque ``next_page.offset`` tokens, which this paginator follows
inside the SDK's own request loop.
"""

from __future__ import annotations

import typing as t

from singer_sdk.pagination import BaseAPIPaginator

from tap_asana_vl.errors import PaginationLoopError
from tap_asana_vl.transport import response_body

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    import requests


def opt_fields_for(schema: Mapping[str, t.Any], skip: Iterable[str] = ()) -> list[str]:
    """Asana ``opt_fields`` paths that return every property of a JSON schema.

    Objects with declared properties are expanded into dotted paths (``assignee.name``)
    because naming only the object returns just its gid; arrays are expanded through
    their items; anything else is requested by name.
    """
    skipped = set(skip)
    paths: list[str] = []

    def walk(node: Mapping[str, t.Any], prefix: str) -> None:
        for name, sub in sorted(node.get("properties", {}).items()):
            if not prefix and name in skipped:
                continue
            target = sub.get("items", sub) if _has_type(sub, "array") else sub
            if target.get("properties"):
                walk(target, f"{prefix}{name}.")
            else:
                paths.append(f"{prefix}{name}")

    walk(schema, "")
    return paths


def _has_type(schema: Mapping[str, t.Any], name: str) -> bool:
    declared = schema.get("type", [])
    return name == declared or (isinstance(declared, list) and name in declared)


def _offset_of(body: Mapping[str, t.Any]) -> str | None:
    next_page = body.get("next_page")
    if isinstance(next_page, dict) and next_page.get("offset"):
        return str(next_page["offset"])
    return None


def next_offset(body: Mapping[str, t.Any], seen: set[str]) -> str | None:
    """The offset of the page after ``body`` (None on the last page), never a repeat.

    A token seen before in the same listing means the pages cycle (A -> B -> A): without
    this check the listing would never end (the SDK only catches A -> A). ``seen``
    collects this listing's tokens.
    """
    offset = _offset_of(body)
    if offset is None:
        return None
    if offset in seen:
        msg = (
            f"Asana sent a pagination token it had already sent for this listing, after "
            f"{len(seen)} pages: the pages cycle. Stopped instead of looping forever; "
            "re-run later, and report it to Asana if it persists."
        )
        raise PaginationLoopError(msg)
    seen.add(offset)
    return offset


class AsanaPaginator(BaseAPIPaginator[str]):
    """Follows ``next_page.offset``; Asana sends ``next_page: null`` on the last page.

    A page may be empty and still have a next page (records on it were filtered out or
    deleted): paging goes on, where the SDK's default would stop and lose the rest.
    """

    def __init__(self, start_value: str | None) -> None:
        """Start a listing with no token seen."""
        super().__init__(start_value)
        self._seen: set[str] = set()

    def get_next(self, response: requests.Response) -> str | None:
        """Return the opaque offset token of the next page, if any."""
        return next_offset(response_body(response), self._seen)

    def continue_if_empty(self, response: requests.Response) -> bool:
        """Keep paging past an empty page that still has a ``next_page``."""
        return _offset_of(response_body(response)) is not None
