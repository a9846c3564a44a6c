"""Users referenced by emitted records, so ``users`` can complete itself.

Asana's user listing (``GET /users?workspace=``) leaves out people who left a workspace
and some guests, yet tasks and stories keep naming them (assignees, followers, authors).
Every stream reports the users its emitted records reference here (a run-wide registry
the tap owns, so no stream reads another); after each workspace's streams, the users
stream emits the referenced users it has not emitted yet (see ``UsersStream``).
"""

from __future__ import annotations

import threading
import typing as t

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping


class UserReferences:
    """User gids (with the name the reference carried) seen in emitted records."""

    def __init__(self) -> None:
        """Off until the tap turns it on (only when ``users`` is selected)."""
        self.enabled = False
        self._seen: dict[str, dict[str, t.Any]] = {}
        self._lock = threading.Lock()

    def note_record(self, record: Mapping[str, t.Any]) -> None:
        """Remember every user reference (``resource_type: user`` with a gid) in ``record``."""
        found: list[dict[str, t.Any]] = []
        stack: list[t.Any] = [record]
        while stack:
            value = stack.pop()
            if type(value) is dict:
                if value.get("resource_type") == "user" and value.get("gid"):
                    found.append(value)
                stack.extend(v for v in value.values() if type(v) in (dict, list))
            elif type(value) is list:
                stack.extend(v for v in value if type(v) in (dict, list))
        if found:
            with self._lock:
                for ref in found:
                    gid = str(ref["gid"])
                    if gid not in self._seen or (
                        ref.get("name") and not self._seen[gid].get("name")
                    ):
                        self._seen[gid] = {
                            "gid": gid,
                            "resource_type": "user",
                            "name": ref.get("name"),
                        }

    def note_gids(self, gids: Iterable[str]) -> None:
        """Remember users named by gid only (columns of derived tables)."""
        with self._lock:
            for gid in gids:
                self._seen.setdefault(str(gid), {"gid": str(gid), "resource_type": "user"})

    def seen(self) -> list[dict[str, t.Any]]:
        """The references seen so far (gid, resource_type, and the name if one carried it)."""
        with self._lock:
            return [dict(ref) for ref in self._seen.values()]
