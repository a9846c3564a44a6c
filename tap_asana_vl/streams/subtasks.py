"""Subtasks at any depth, and their stories.

Asana does not bump a task's ``modified_at`` when one of its subtasks changes, so
changed subtasks come from two places:

1. **Under each task emitted in this run** (this stream is a child of ``tasks``): the
   task passes whether it has subtasks, and its subtree is read, a page of tasks'
   subtrees at a time, concurrently.
2. **A sweep of each workspace**, after that workspace's tasks, for subtasks edited
   under unchanged tasks: Asana's task search (paid plans; ``is_subtask=true`` and
   ``modified_at.after`` = the workspace's search bookmark, 100 per request; without
   one, the run's start in the first run of tasks, else ``start_date``), or where
   search answers 402 (free plans) a walk of every task's subtree every
   ``subtasks_full_walk_days`` days (0: every run). A walk skips the trees this run
   read under tasks where it foresaw the walk (``_walk_may_follow``): so that the run's
   memory does not grow with the trees it reads, they are noted only there.

Both depend only on what the stream is given (a task context, a workspace context), so
subtasks are complete whatever else is selected.
"""

from __future__ import annotations

import typing as t

from tap_asana_vl import sdk_adapter
from tap_asana_vl.errors import ScopeMissingError, SkippedObjectError
from tap_asana_vl.gid_table import GidTable
from tap_asana_vl.streams.base import AsanaStream, gid_key, workspace_of
from tap_asana_vl.streams.project_level import (
    DERIVED_FIELDS,
    TASK_FIELD_SCOPES,
    TasksStream,
    derived_fields,
)
from tap_asana_vl.streams.search import (
    OVERLAP_STATE_KEY,
    SEARCH_PAGE,
    SEARCH_STATE_KEY,
    OverlapMemory,
    SearchProgress,
    SearchTiesError,
    SearchUnavailableError,
    TaskSearch,
    covered_until,
    search_bookmarks,
)
from tap_asana_vl.streams.task_level import StoryListing
from tap_asana_vl.streams.workspace_level import project_listing_params, project_wanted
from tap_asana_vl.timestamps import format_timestamp, now, older_than, parse_timestamp

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    from singer_sdk.helpers.types import Context


#: When each workspace's subtask trees were last all walked (free plans), in state.
FULL_WALKS_STATE_KEY = "full_walks"


class SubtasksStream(AsanaStream):
    """Subtasks at any depth, with the full task schema (``parent`` says whose)."""

    name = "subtasks"
    path = "/tasks/{task_gid}/subtasks"
    required_scope = "tasks:read"
    field_scopes = TASK_FIELD_SCOPES
    parent_stream_type = TasksStream
    sweeps_each_workspace = True
    # No SDK replication key: the SDK's bookmark (the newest record written) would also
    # count subtasks found by tree walks, which could pass changes that search has not
    # seen yet. The search's own high-water mark is kept per workspace instead.
    # What leaves unchanged subtasks out: the search's bookmarks, the walks' dates.
    bookmark_keys = (SEARCH_STATE_KEY, OVERLAP_STATE_KEY, FULL_WALKS_STATE_KEY)
    switch_setting = "include_subtasks"
    context_label = ("task", "task_gid")
    child_context_key = "task_gid"
    deduplicate = True
    prefetch = True
    # The walk follows num_subtasks; search pages by modified_at, then created_at.
    # Derived tables (streams/derived.py) are made of DERIVED_FIELDS.
    required_fields = frozenset(
        {"workspace", "num_subtasks", "modified_at", "created_at", *DERIVED_FIELDS}
    )

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """No tree read yet."""
        super().__init__(*args, **kwargs)
        # Tasks whose subtree was read (or refused) in this run, from any thread; only in
        # workspaces where ``_walk_follows``: no other sweep asks.
        self._trees_read = GidTable(values=False)  # gid_key: compact, a set
        #: Per workspace: whether its sweep may walk trees (``_walk_may_follow``).
        self._walk_follows: dict[str, bool] = {}
        self._walked_workspaces: set[str] = set()
        #: Per workspace: tasks listed unchanged by a reconcile pass that have subtasks;
        #: their trees are read in the workspace's sweep (see ``read_tree_later``).
        self._trees_to_read: dict[str, list[str]] = {}
        #: The sweep is delivering walked trees (after its search), not search results.
        self._walking = False
        #: A subtree could not be read (refused, gone): its subtasks may be found by
        #: the sweeps' searches only, so those search every subtask (``_from_scratch``).
        self._a_tree_skipped = False
        #: Per workspace: ``_from_scratch``'s answer, once made.
        self._scratch_from: dict[str, str] = {}
        #: Per workspace: whether search works there (None) or its refusal, learnt
        #: before its first tree was read (see ``_sweep_searches``).
        self._probed: dict[str, SearchUnavailableError | None] = {}

    def read_tree_later(self, workspace: str, task_gid: str) -> None:
        """Read ``task_gid``'s subtree in ``workspace``'s sweep (for a reconcile pass).

        A reconcile re-writes every live subtask with its table version; a task listed
        unchanged is not emitted, so its subtree would otherwise not be read.
        """
        if self.config["include_subtasks"]:
            self._trees_to_read.setdefault(workspace, []).append(task_gid)

    def may_come_again(self, record: dict[str, t.Any], context: Context | None) -> bool:
        """Whether this run may deliver the subtask again, so its gid must be remembered.

        One read under a task may be among the workspace sweep's search results (those
        modified after ``_search_from``); one the sweep's search finds may be in a tree
        the sweep walks after it. One the sweep walks is its last delivery (a walk
        skips the trees noted as read, and walks each tree once).
        """
        if "task_gid" in (context or {}):
            workspace = workspace_of(record)
            bookmark = self._bookmark(workspace)
            after = self._search_from(workspace)
            modified = record.get("modified_at")
            if after and modified and parse_timestamp(str(modified)) <= parse_timestamp(after):
                return False
            # With a bookmark, the workspace searches (it did before). Without one (a
            # first run, or a free plan, which never has one): if it searches at all.
            return bool(bookmark) or self._sweep_searches(workspace)
        return not self._walking

    def _bookmark(self, workspace: str | None) -> str | None:
        """The workspace's subtask search bookmark, as this run found it."""
        return (sdk_adapter.stored_state(self).get(SEARCH_STATE_KEY) or {}).get(workspace)

    def _search_from(self, workspace: str | None) -> str | None:
        """Where the workspace's sweep searches from (None: every subtask).

        Its bookmark, else ``_from_scratch``, else ``start_date``.
        """
        return (
            self._bookmark(workspace)
            or self._from_scratch(workspace)
            or self.config.get("start_date")
        )

    def _from_scratch(self, workspace: str | None) -> str | None:
        """Where the sweep searches from in the first run of tasks and subtasks (else None).

        Then every task in scope is emitted, and its subtree read, after the
        workspace's first listing (``services.tasks_from_scratch``): only subtasks
        edited since can have been missed, so the search starts there (less the index
        lag), not at every subtask of the workspace, which would also bring those of
        tasks out of scope. Not once a subtree could not be read, nor where some tasks
        were not emitted after all (``TasksStream._not_every_task_emitted``): then, as
        in any other run without a bookmark, the sweep searches from ``start_date``.
        """
        since = self.services.tasks_from_scratch.get(str(workspace))
        if since is None or self._a_tree_skipped:
            return None
        # Asked for every subtask read under a task: formatted once per workspace (the
        # time noted for a workspace never changes; it may only be withdrawn).
        key = str(workspace)
        if key not in self._scratch_from:
            self._scratch_from[key] = covered_until(since)
        return self._scratch_from[key]

    def _skip(self, context: Context | None, exc: SkippedObjectError) -> None:
        """As any stream; a subtree skipped makes the sweeps search every subtask."""
        if "task_gid" in (context or {}):
            self._a_tree_skipped = True
        super()._skip(context, exc)

    def _sweep_searches(self, workspace: str | None) -> bool:
        """Whether the workspace's sweep searches (False where search answers 402).

        Asked once per workspace, before its first tree is read (``_walk_may_follow``),
        with the sweep's own first request: a free plan does not remember every subtask
        read under a task for a search that never comes, nor the sweep ask again for
        its 402. Where search works, the sweep asks that page again, to see what was
        edited meanwhile. A missing scope is left to the sweep; other failures are
        raised, as the sweep's would be.
        """
        if not workspace:
            return True
        if workspace not in self._probed:
            finder = TaskSearch(self, workspace, is_subtask=True, progress=SearchProgress(None))
            try:
                finder.probe(self._search_from(workspace))
            except SearchUnavailableError as exc:
                self._probed[workspace] = exc
            except ScopeMissingError:
                return True  # the sweep meets it again and turns the stream off, as before
            else:
                self._probed[workspace] = None
        return self._probed[workspace] is None

    def wanted(self, context: Mapping[str, t.Any]) -> bool:
        """Off with ``include_subtasks: false``; under a task, only if it has subtasks.

        Before the first tree of a workspace is read, decides whether its trees are
        noted (``_walk_may_follow``); asked on the main thread, before any fetch.
        """
        if self.switched_off():
            return False
        if "task_gid" in context and not context.get("num_subtasks"):
            return False
        if not super().wanted(context):
            return False
        workspace = context.get("workspace_gid")
        if "task_gid" in context and workspace and workspace not in self._walk_follows:
            self._walk_follows[str(workspace)] = self._walk_may_follow(str(workspace))
        return True

    def _walk_may_follow(self, workspace: str) -> bool:
        """Whether the workspace's sweep may walk trees: then the trees read before it are noted.

        A walk skips them.

        Not with a search bookmark, nor where search works (``_sweep_searches`` asks
        now); else (free plans) if a full walk is due. Walks not foreseen re-read the
        trees read under tasks: more requests (and ``subtask_stories`` ones), the same
        records again, never fewer. They are: search unable to page past ties, a
        reconcile's trees, and the run in which a workspace with a bookmark first finds
        search refused (moved to a free plan: its full walk is due).
        """
        if self._bookmark(workspace):
            return False
        if self._sweep_searches(workspace):
            return False
        return self._full_walk_due(workspace)

    def get_child_context(
        self,
        record: dict[str, t.Any],
        context: Context | None,  # noqa: ARG002
    ) -> dict[str, t.Any]:
        """A subtask's stories need its gid (and its workspace, like any task's child).

        Its derived tables (streams/derived.py) get their fields, as under a task.
        """
        return {
            "task_gid": record["gid"],
            "workspace_gid": workspace_of(record),
            **derived_fields(record),
        }

    def fetch(self, context: Context) -> list[dict[str, t.Any]]:
        """Every subtask below the task of ``context``, depth first."""
        workspace = str(context.get("workspace_gid"))
        remember = self._walk_follows.get(workspace, True)
        return self._subtree(str(context["task_gid"]), root=True, remember=remember)

    def source_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """A task's subtree, or for a workspace context, that workspace's sweep."""
        context = context or {}
        if "task_gid" in context:
            return super().source_records(context)
        return self._sweep(str(context["workspace_gid"]))

    # --- Trees ---------------------------------------------------------------------------

    def _subtree(
        self, task_gid: str, *, root: bool = False, remember: bool = False
    ) -> list[dict[str, t.Any]]:
        """The subtasks below ``task_gid``; one unreadable subtree below it is skipped.

        ``remember``: note each tree read, for a walk later in the run to skip.
        """
        if remember:
            self._trees_read.add(gid_key(task_gid))
        try:
            records = list(self.list_records({"task_gid": task_gid}))
        except SkippedObjectError as exc:
            if root:
                raise  # the caller skips the whole context
            # One task deleted or hidden since it was listed: skip its subtree only.
            self._skip({"task_gid": task_gid}, exc)
            return []
        for record in list(records):
            if record.get("num_subtasks"):
                records.extend(self._subtree(record["gid"], remember=remember))
        return records

    def _subtrees(self, parents: list[str]) -> Iterator[dict[str, t.Any]]:
        """Every subtask below ``parents``, fetched concurrently, depth first per tree.

        A page of parents at a time, so memory holds one batch of trees, not all.
        """
        for start in range(0, len(parents), self.page_size):
            batch = parents[start : start + self.page_size]
            for tree in self.services.executor.map(self._subtree_or_skip, batch):
                yield from tree

    def _subtree_or_skip(self, task_gid: str) -> list[dict[str, t.Any]]:
        # A walk's trees: no later walk in this workspace, so none is noted.
        try:
            return self._subtree(task_gid, root=True)
        except SkippedObjectError as exc:
            self._skip({"task_gid": task_gid}, exc)
            return []

    # --- The workspace sweep -------------------------------------------------------------

    def _sweep(self, workspace: str) -> Iterator[dict[str, t.Any]]:
        """Changed subtasks of one workspace that no changed task revealed."""
        self.services.progress.doing(f"'subtasks' for workspace {workspace}")
        bookmarks = search_bookmarks(self)
        search = SearchProgress(bookmarks.get(workspace))
        scratch = None if search.high_water else self._from_scratch(workspace)
        after = self._search_from(workspace)
        parents: list[str] = []
        finder: TaskSearch | None = None
        # The search re-reads the last run's overlap window: what it delivered there
        # unchanged is skipped, with its stories (search.OverlapMemory).
        overlap = OverlapMemory(self, workspace, covered_until(now()))
        try:
            refused = self._probed.pop(workspace, None)
            if refused is not None:
                raise refused  # learnt before the first tree was read: not asked again
            finder = TaskSearch(self, workspace, is_subtask=True, progress=search)
            for record in finder.changed(after):
                if overlap.delivered_before(record):
                    self.stats.unchanged_dropped += 1
                    continue
                overlap.note(record)
                yield record
            if scratch:
                # Read to the end: covered from there even if it found nothing. Without
                # a bookmark, the next run would search from start_date again, and
                # without reading every tree.
                search.saw(scratch)
        except SearchTiesError as exc:
            self.logger.warning(
                "Asana's search cannot page past %s in workspace %s (more than %d "
                "subtasks created and modified in the same millisecond?): walking every "
                "task's subtasks there instead",
                exc,
                workspace,
                SEARCH_PAGE,
            )
            parents = self._all_tasks_with_subtasks(workspace)
            self._walked_workspaces.add(workspace)
        except SearchUnavailableError as exc:
            self.services.logger.info(
                "Task search unavailable in workspace %s (%s): using subtask walks",
                workspace,
                exc,
            )
            # No bookmark where search is refused (a free plan, or one moved to it), so
            # later runs know the sweep walks (and note the trees read before it).
            # Null, not removed: Meltano merges the state it stores with what the tap
            # writes.
            bookmarks[workspace] = None  # type: ignore[assignment]
            search = SearchProgress(None)
            if self._full_walk_due(workspace):
                self.services.logger.info(
                    "Walking every task's subtasks in workspace %s", workspace
                )
                parents = self._all_tasks_with_subtasks(workspace)
                self._walked_workspaces.add(workspace)
        parents += self._trees_to_read.pop(workspace, [])
        self._walking = True
        try:
            # A parent may be listed twice (the full walk and the reconcile's): one walk.
            unique = dict.fromkeys(parents)
            yield from self._subtrees(
                [gid for gid in unique if gid_key(gid) not in self._trees_read]
            )
        finally:
            self._walking = False
        walked = workspace in self._walked_workspaces
        started = now()
        # Asana's search index lags edits by seconds to minutes, so the mark never passes
        # the lag before the search's first request (a probe's may be long before the
        # sweep): a late-indexed change is found next run (repeats are harmless,
        # targets upsert).
        searched_from = finder.started if finder is not None and finder.started else started

        def advance_state() -> None:
            if search.high_water:
                bookmarks[workspace] = min(search.high_water, covered_until(searched_from))
            overlap.save(self, workspace, bookmarks.get(workspace))
            if walked:
                # Per workspace, and only now that this walk's records are out: a run
                # killed during another workspace's walk redoes that one next time.
                walks = sdk_adapter.own_map(self, FULL_WALKS_STATE_KEY)
                walks[workspace] = format_timestamp(started)

        self.after_emit(advance_state)

    def _full_walk_due(self, workspace: str) -> bool:
        if workspace in self._walked_workspaces:
            return True
        last = (sdk_adapter.own_state(self).get(FULL_WALKS_STATE_KEY) or {}).get(workspace)
        return not last or older_than(last, float(self.config["subtasks_full_walk_days"]))

    def _all_tasks_with_subtasks(self, workspace: str) -> list[str]:
        """Tasks with subtasks in the workspace's projects.

        The projects are listed here: this stream must not depend on the projects
        stream having run (it may be deselected).
        """
        listing = {"limit": self.page_size, "opt_fields": "gid"}
        projects = self.list_endpoint(
            "/projects", {**listing, "workspace": workspace, **project_listing_params(self.config)}
        )
        gids: dict[str, None] = {}
        for project in (p["gid"] for p in projects if project_wanted(self.config, p["gid"])):
            params = {**listing, "project": project, "opt_fields": "num_subtasks"}
            try:
                for task in self.list_endpoint("/tasks", params):
                    if task.get("num_subtasks"):
                        gids[task["gid"]] = None
            except SkippedObjectError as exc:
                self._skip({"task_gid": f"(tasks of project {project})"}, exc)
        return list(gids)


class SubtaskStoriesStream(StoryListing):
    """Stories of each subtask emitted in this run (the ``stories`` schema)."""

    name = "subtask_stories"
    parent_stream_type = SubtasksStream
    context_label = ("subtask", "task_gid")
