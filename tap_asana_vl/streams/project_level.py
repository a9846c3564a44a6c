"""Streams listed once per project: its tasks, sections, members, custom fields, updates."""

from __future__ import annotations

import datetime
import typing as t

import tap_asana_vl.streams.changed_tasks as changed_tasks
import tap_asana_vl.streams.deletes as deletes
import tap_asana_vl.streams.full_reads as full_reads
import tap_asana_vl.streams.project_children as project_children
import tap_asana_vl.streams.purge as purge
import tap_asana_vl.streams.reconcile as reconciling
import tap_asana_vl.streams.workspace_events as workspace_events
from tap_asana_vl import scopes, sdk_adapter
from tap_asana_vl.errors import RefusedError, ScopeMissingError, SkippedObjectError
from tap_asana_vl.streams.base import AsanaStream, workspace_of
from tap_asana_vl.streams.prefetch import Prefetches, listings_in_order
from tap_asana_vl.streams.search import (
    OVERLAP_STATE_KEY,
    SEARCH_PAGE,
    SEARCH_STATE_KEY,
    OverlapMemory,
    SearchTiesError,
    SearchUnavailableError,
    covered_until,
)
from tap_asana_vl.streams.unplaced_search import UnplacedSearch
from tap_asana_vl.streams.workspace_level import SWEEP, ProjectsStream
from tap_asana_vl.timestamps import format_timestamp, parse_timestamp

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

    import requests
    from singer_sdk.helpers.types import Context

# Scopes some fields need beyond the stream's own (Asana's spec, GET /tasks/{task_gid});
# tests check every declaration against the spec.
TASK_FIELD_SCOPES: dict[str, tuple[str, ...]] = {
    "memberships": ("projects:read", "project_sections:read"),
    "actual_time_minutes": ("time_tracking_entries:read",),
}


# Fields of a task (or subtask) its derived tables are made of (streams/derived.py):
# passed to its children, so those tables cost no request.
#: Users whose assigned tasks are requested ahead of the one being read (free plans'
#: tasks in no project): 3 listings in flight make 6 users/s at 500 ms instead of 2,
#: while holding at most 3 pages of tasks (a page of 100 tasks decodes to ~2 MB).
USERS_READ_AHEAD = 2
DERIVED_FIELDS = ("modified_at", "custom_fields", "tags", "followers", "dependencies")


def derived_fields(record: dict[str, t.Any]) -> dict[str, t.Any]:
    """What a task passes its derived tables (``DERIVED_FIELDS`` of its record)."""
    return {name: record.get(name) for name in DERIVED_FIELDS}


#: How a bookmarks record (selection.py) names the tasks in no project it covers.
TASKS_IN_NO_PROJECT = "tasks in no project"


class TasksStream(AsanaStream):
    """Tasks per project changed since the project's bookmark; multi-homed tasks once."""

    name = "tasks"
    path = "/tasks"
    required_scope = "tasks:read"
    field_scopes = TASK_FIELD_SCOPES
    parent_stream_type = ProjectsStream
    replication_key = "modified_at"
    modified_since_param = "modified_since"
    context_params: t.ClassVar[dict[str, str]] = {"project": "project_gid"}
    context_label = ("project", "project_gid")
    child_context_key = "task_gid"
    tap_fields = frozenset({"project_gid"})
    deduplicate = True
    # A project's first page of tasks is requested while the previous project's tasks
    # and stories are synced (see ``ready_to_read_ahead``).
    reads_ahead = True
    # One bookmark per project, so an interrupted run resumes project by project. (A
    # project also passes its workspace; the bookmark's key is the project alone. The
    # workspace sweep has no project: its few keys go to the stream's own entry.)
    state_partitioning_keys: t.ClassVar[list[str] | None] = ["project_gid"]
    # What leaves unchanged tasks out: each project's bookmark, the search's (events
    # tokens stay; see selection.py).
    bookmark_keys = ("replication_key_value", SEARCH_STATE_KEY, OVERLAP_STATE_KEY)
    # Changed tasks of a workspace whose projects the search covers are found once per
    # workspace, after its projects (see changed_tasks.py).
    sweeps_each_workspace = True
    # Children read these even when a user deselects them.
    # (``parent``: a task re-read after an event must not be a subtask; see deletes.py.)
    required_fields = frozenset(
        {
            "workspace",
            "num_subtasks",
            "memberships",
            "actual_time_minutes",
            "parent",
            *DERIVED_FIELDS,
        }
    )

    def covers(self) -> list[str]:
        """Tasks in no project too, when read (``include_tasks_without_projects``).

        Turned on later, that setting starts the bookmarks over as a new stream would:
        unchanged tasks in no project (and their stories) would otherwise never come.
        """
        names = super().covers()
        if self.config.get("include_tasks_without_projects", True) and not self.switched_off():
            names.append(TASKS_IN_NO_PROJECT)
        return names

    def start_over(self) -> None:
        """As a first run, which reconciles (where it can): every task is listed anyway.

        The pass then marks what went away while the new stream was not written, and
        its reading every task's stories counts toward their floor (purge.py).
        """
        super().start_over()
        if reconciling.possible(self):
            reconciling.request(self)

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        """Set up the per-run bookkeeping of deletes (see deletes.py)."""
        super().__init__(*args, **kwargs)
        #: Tasks re-read because of an event: emitted even if their bookmark says unchanged.
        self._reread: set[str] = set()
        #: Why events are not read in this run (None: they are).
        self.events_off: str | None = None
        self._events_warned = False
        #: This run's reconcile pass, decided once (``reconcile``, ``_reconcile_at_once``).
        self._reconcile: reconciling.Reconcile | None = None
        #: Whether the state held no bookmark when this run began (None: not known yet).
        self._first_run: bool | None = None
        #: How each workspace's changed tasks are found in this run (changed_tasks.py).
        self._plans: dict[str, changed_tasks.WorkspacePlan] = {}
        #: Users' assigned tasks read ahead (free plans' tasks in no project), by user.
        self._assigned_ahead: Prefetches | None = None
        #: Each workspace's events, read once (None: each project's are read instead).
        self._workspace_events_read: dict[str, workspace_events.WorkspaceEvents | None] = {}
        #: Projects whose first page is read ahead: Asana's time before it was started,
        #: and the bookmark it lists from (the SDK's is written when the project starts).
        self._read_ahead: dict[str, tuple[datetime.datetime, t.Any]] = {}

    # --- Deletes and moves (Asana's events; see deletes.py) ------------------------------

    def source_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """A project's events and changed tasks, or a workspace's sweep.

        A project: its events (deletes, moves), then its changed tasks, unless the
        workspace's search and events cover it (changed_tasks.py, workspace_events.py).
        A workspace's sweep: what its search and events found.

        Tasks an event names are re-read before the listing, so the bookmark never
        passes a change the listing has not seen.
        """
        context = context or {}
        if context.get(SWEEP):
            yield from self._search_sweep(str(context["workspace_gid"]))
            return
        project = str(context["project_gid"])
        # Events before the reconcile is decided: an expired token (412) found before
        # anything is listed makes this run the reconcile pass (reconcile.py).
        events = None
        if self._workspace_events_once(context.get("workspace_gid")) is None:
            events = self._read_project_events(context)
        if self.reconcile.due:
            self.after_emit(lambda: self.reconcile.projects_done.add(project))
        plan = self._plan(context.get("workspace_gid"))
        if events is not None:
            yield from self._from_events(context, events)
        if plan is None:
            yield from super().source_records(context)
            return
        bookmark = sdk_adapter.bookmark_value(self, context)
        read_ahead = self._read_ahead.pop(project, None)
        if changed_tasks.covered_by_search(plan, bookmark):
            self.prefetches.drop(project)
            plan.projects[project] = None  # its changes come from the workspace's search
            return
        # Asana's time before the listing's first request (its first page may have been
        # read ahead): what the listing covers.
        listed_at = read_ahead[0] if read_ahead and project in self.prefetches else None
        plan.projects[project] = format_timestamp(listed_at or self.services.server_clock.latest())
        yield from super().source_records(context)

    def ready_to_read_ahead(self, context: Context) -> bool:
        """Whether the project's first page of tasks may be requested now, ahead.

        Only where nothing read at the project's own turn decides its listing: the run's
        reconcile decision and its workspace's plan are made (at the workspace's first
        project), the workspace's events were read (a project's own events come before
        its listing), and no project there may be covered by the search instead (a
        paid plan's re-sync lists only projects its search cannot cover). The
        project's starting bookmark (its ``modified_since``) is read here, on the main
        thread, without writing the state: the SDK makes the project's state entry when
        its sync starts, so checkpoints stay as in a sequential run.
        """
        workspace = str(context.get("workspace_gid") or "")
        plan = self._plans.get(workspace)
        if (
            self._reconcile is None
            or plan is None
            or self._workspace_events_read.get(workspace) is None
            or (plan.search is not None and plan.previous)
        ):
            return False
        self._read_ahead[str(context["project_gid"])] = (
            self.services.server_clock.latest(),
            sdk_adapter.starting_value(self, context),
        )
        return True

    def expected_from_head(self, record: dict[str, t.Any], key: str) -> bool:
        """Whether a task read ahead for project ``key`` may be emitted in this run.

        Not one unchanged since the project's bookmark (Asana's ``modified_since`` is
        inclusive: the task that set it comes back every run).
        """
        if not super().expected_from_head(record, key):
            return False
        read_ahead = self._read_ahead.get(key)
        since = read_ahead[1] if read_ahead else None
        modified = record.get("modified_at")
        return not (
            since and modified and parse_timestamp(str(modified)) <= parse_timestamp(str(since))
        )

    def get_records(self, context: Context | None) -> Iterable[dict[str, t.Any]]:
        """As any stream; then the project's bookmark is final (resumable per project).

        (Its context also names the workspace, so the SDK does not finalize it itself.)
        """
        yield from super().get_records(context)
        if context and "project_gid" in context:
            sdk_adapter.finalize_partition(self, context)
        elif context and context.get(SWEEP):
            # The SDK tracked the sweep's records in the stream's own entry; its bookmark
            # is the workspace's search bookmark (changed_tasks.py), so that is dropped.
            sdk_adapter.drop_progress(self, context)

    # --- Changed tasks from the workspace's search (see changed_tasks.py) -----------------

    def _plan(self, workspace: t.Any) -> changed_tasks.WorkspacePlan | None:
        """The workspace's plan for this run, decided at its first project (or sweep)."""
        if not workspace:
            return None
        workspace = str(workspace)
        if workspace not in self._plans:
            because = None
            if self.reconcile.due:
                because = "a reconcile pass lists every project"
            elif "memberships" in self.scope_skipped_fields:
                because = "the OAuth scopes hide memberships"
            # Events first: a workspace's events read now are never newer than the
            # listings and the search that follow (a change in between comes twice).
            events = self._workspace_events_once(workspace)
            plan = changed_tasks.plan(self, workspace, listing_because=because)
            if self._first_run is None:
                # Decided before this run writes any bookmark (at its first workspace).
                self._first_run = changed_tasks.holds_no_bookmark(sdk_adapter.stored_state(self))
            if self._first_run and not (
                self.config.get("start_date") or self.config.get("project_gids")
            ):
                # This run emits every task of the workspace. (With project_gids, the
                # other projects' subtasks come from its search: "Running at scale".)
                self.services.tasks_from_scratch[workspace] = self.services.server_clock.latest()
            plan.events = events
            if events is not None:
                plan.rereads_in_sweep = frozenset(events.reread_tasks)
            for project, changes in (events.changes if events else {}).items():
                if project and changes.touched_sections:
                    project_children.note_section_events(self, project)
            if events is not None and events.expired:
                project_children.note_events_lost(self, workspace)
            if plan.search is None:
                self.logger.info(
                    "Listing each project's changed tasks in workspace %s: %s",
                    workspace,
                    plan.listing_because,
                )
                if not plan.search_refused and self.config.get(
                    "include_tasks_without_projects", True
                ):
                    # Read while the projects are listed; the sweep emits what it found.
                    plan.unplaced_search = self._search_unplaced(workspace, plan.previous)
            self._plans[workspace] = plan
        return self._plans[workspace]

    def _workspace_events_once(self, workspace: t.Any) -> workspace_events.WorkspaceEvents | None:
        """The workspace's events, read at its first project (or sweep); see below."""
        if not workspace:
            return None
        workspace = str(workspace)
        if workspace not in self._workspace_events_read:
            events = self._workspace_events(workspace)
            self._workspace_events_read[workspace] = events
            if events is not None and events.expired:
                self._reconcile_at_once(f"workspace {workspace}")
        return self._workspace_events_read[workspace]

    def _workspace_events(self, workspace: str) -> workspace_events.WorkspaceEvents | None:
        """The workspace's events, or None where each project's must be read instead."""
        if self.events_off is not None or scopes.granted_scopes(self.config) is not None:
            return None  # per project, where the warning is given once
        try:
            return workspace_events.read(self, workspace, frozenset(self._value_removal_streams()))
        except ScopeMissingError as exc:
            self._events_unavailable(str(exc))
            return None
        except SkippedObjectError as exc:
            self.logger.info(
                "Workspace events unavailable in workspace %s (%s): reading each project's "
                "events (one request per project)",
                workspace,
                exc,
            )
            return None

    def _search_sweep(self, workspace: str) -> Iterator[dict[str, t.Any]]:
        """The workspace's changed tasks from its search (in projects it did not list).

        A task is emitted under the first of its projects this run syncs; tasks of
        other projects only are left out (``project_gids``, archived projects). Tasks
        its events name are read again and emitted first (moves without a new
        ``modified_at``), then its tombstones are written (workspace_events.py).
        """
        plan = self._plan(workspace)
        if plan is None:
            return
        if plan.events is not None:
            yield from self._from_workspace_events(plan)
        if plan.search is not None and plan.searched_from is not None:
            self.services.progress.doing(f"'tasks' for workspace {workspace} (search)")
            # The search re-reads the last run's overlap window: what it delivered there
            # unchanged is skipped, with its stories (search.OverlapMemory).
            overlap = OverlapMemory(self, workspace, covered_until(plan.searched_from))
            plan.overlap = overlap
            try:
                for record in plan.search.changed(plan.previous):
                    if overlap.delivered_before(record):
                        self.stats.unchanged_dropped += 1
                        continue
                    project = changed_tasks.project_of(record, plan)
                    if project is None and not self._wanted_without_project(record):
                        continue
                    record["project_gid"] = project
                    overlap.note(record)
                    yield record
                plan.searched_to_end = True
            except SearchTiesError as exc:
                self.logger.warning(
                    "Asana's search cannot page past %s in workspace %s (more than %d "
                    "tasks created and modified in the same millisecond?): the next run "
                    "lists each project's changed tasks instead",
                    exc,
                    workspace,
                    SEARCH_PAGE,
                )
        elif self.config.get("include_tasks_without_projects", True):
            yield from self._tasks_without_projects(plan)
        self.after_emit(lambda: changed_tasks.advance(self, plan))

    def _wanted_without_project(self, record: dict[str, t.Any]) -> bool:
        """A task in no project, and the settings want those."""
        return bool(self.config.get("include_tasks_without_projects", True)) and (
            changed_tasks.in_no_project(record)
        )

    def _tasks_without_projects(self, plan: changed_tasks.WorkspacePlan) -> Iterator[dict]:
        """Tasks in no project, in a run that listed each project (no project lists them).

        Paid plans: the workspace's search (from the search bookmark; all of them on a
        first run or in a reconcile pass, whose unchanged ones are re-written without
        children). Free plans (search answers 402): each user's assigned tasks
        (``GET /tasks?assignee=…&workspace=…``, one request per user per run).
        """
        workspace = plan.workspace
        since = None if self.reconcile.due else plan.previous
        if plan.unplaced_search is None and not plan.search_refused:
            plan.unplaced_search = self._search_unplaced(workspace, plan.previous)
        started = (
            plan.unplaced_search.started
            if plan.unplaced_search is not None
            else self.services.server_clock.latest()
        )
        self.services.progress.doing(f"'tasks' in no project, workspace {workspace}")
        try:
            found = self._unplaced_candidates(plan, since, started)
            for record in found:
                if not changed_tasks.in_no_project(record):
                    continue
                record["project_gid"] = None
                modified = record.get("modified_at")
                unchanged = bool(
                    plan.previous
                    and modified
                    and parse_timestamp(str(modified)) <= parse_timestamp(plan.previous)
                )
                if self.reconcile.due and unchanged:
                    # Not changed: only its row is re-written (the reconcile's version).
                    reconciling.write_unchanged(self, self.reconcile, dict(record))
                    continue
                yield record
        except SkippedObjectError as exc:
            plan.unplaced_failed = True
            self._not_every_task_emitted(workspace)
            if self.reconcile.due:
                self.reconcile.problems.append(
                    f"tasks in no project of workspace {workspace} not read ({exc})"
                )
            self.logger.warning(
                "Tasks in no project of workspace %s were not read in full (%s): the next "
                "run reads them again",
                workspace,
                exc,
            )

    def _unplaced_candidates(
        self, plan: changed_tasks.WorkspacePlan, since: str | None, started: datetime.datetime
    ) -> Iterator[dict[str, t.Any]]:
        """Tasks that may be in no project: the search's, else each user's assigned ones.

        Sets ``plan.unplaced_covered`` once all are read.
        """
        workspace = plan.workspace
        try:
            if plan.unplaced_search is None:
                raise SearchUnavailableError  # refused earlier in this run: not asked again
            # The search ran while the projects were listed (unplaced_search.py); its
            # first page said whether search works (402 on free plans).
            yield from plan.unplaced_search.candidates()
            plan.unplaced_covered = covered_until(started)
            return
        except SearchUnavailableError:
            pass
        except SearchTiesError as exc:
            # A bulk edit the search cannot page (it stays until those tasks change):
            # never skip them, and do not stay stuck on it either.
            self.logger.warning(
                "Asana's search cannot page past %s in workspace %s: listing each user's "
                "assigned tasks instead (unassigned tasks in no project are read once the "
                "search can page again)",
                exc,
                workspace,
            )
            if self.reconcile.due:
                self.reconcile.problems.append(
                    f"unassigned tasks in no project of workspace {workspace} not read"
                )
            self._not_every_task_emitted(workspace)
        yield from self._assigned_tasks(workspace, since)
        plan.unplaced_covered = format_timestamp(started)

    def _not_every_task_emitted(self, workspace: str) -> None:
        """Some of the workspace's tasks are not emitted in this run after all.

        So their subtrees are not read: its subtask sweep must search every subtask, as
        in any run that does not start from scratch (``changed_tasks.holds_no_bookmark``).
        """
        self.services.tasks_from_scratch.pop(workspace, None)

    def _search_unplaced(self, workspace: str, previous: str | None) -> UnplacedSearch:
        """Start searching for the workspace's tasks in no project (from its bookmark).

        All of them (from ``start_date``) on a first run or in a reconcile pass, whose
        unchanged ones are re-written.
        """
        since = None if self.reconcile.due else previous
        return UnplacedSearch(
            self, workspace, since or self.config.get("start_date"), changed_tasks.in_no_project
        )

    def _assigned_tasks(self, workspace: str, since: str | None) -> Iterator[dict[str, t.Any]]:
        """Every user's assigned tasks in the workspace, modified since ``since``."""
        users = self.list_endpoint(
            "/users", {"workspace": workspace, "limit": self.page_size, "opt_fields": "gid"}
        )
        start = since or self.config.get("start_date")

        def assigned_to(user: str) -> Iterable[dict[str, t.Any]]:
            params = {
                "assignee": user,
                "workspace": workspace,
                "limit": self.page_size,
                "opt_fields": self.opt_fields,
            }
            if start:
                params["modified_since"] = format_timestamp(parse_timestamp(str(start)))
            return self.list_endpoint("/tasks", params)

        # One request per user, most of them a single page: read a few users ahead, or
        # each would wait a round trip with nothing else in flight.
        # Its own per workspace (keyed by user, and users belong to several); kept on the
        # stream for may_come_again.
        self._assigned_ahead = self.new_prefetches()
        yield from listings_in_order(
            self._assigned_ahead,
            [u["gid"] for u in users],
            assigned_to,
            depth=USERS_READ_AHEAD,
            first=self.page_size,
        )

    def _from_workspace_events(self, plan: changed_tasks.WorkspacePlan) -> Iterator[dict]:
        """Tasks the workspace's events name, read again; tombstones once all is written."""
        events = plan.events
        if events is None:
            return
        if events.expired:
            self.logger.warning(
                "Asana's events token for workspace %s expired (not read for 24 h or more): "
                "tasks, stories or sections deleted in that gap are not marked deleted; "
                "%s reconciles tasks. Run the tap at least daily.",
                plan.workspace,
                "this run" if self.reconcile.due else "the next run",
            )
        unplaced = events.bucket(workspace_events.NO_PROJECT)
        reread = list(deletes.reread(self, events.reread_tasks, unplaced))
        emitted = {str(record["gid"]): deletes.memberships_of(record) for record in reread}
        self._reread |= set(emitted)
        current = self._current_after_events(unplaced, reread)

        def finish() -> None:
            now = format_timestamp(datetime.datetime.now(datetime.timezone.utc))
            workspace_events.write_tombstones(self, events, emitted, now=now)
            for changes in events.changes.values():
                self._write_value_tombstones(changes, current)
            workspace_events.keep_token(self, events)
            if events.expired:
                reconciling.request(self)

        self.after_emit(finish)
        for record in reread:
            project = changed_tasks.project_of(record, plan)
            if project is None and emitted[str(record["gid"])]:
                continue  # only in projects this run does not sync
            record["project_gid"] = project
            yield record

    def may_come_again(self, record: dict[str, t.Any], context: Context | None) -> bool:
        """Whether this run may deliver the task again, so its gid must be remembered.

        A task in several projects is listed under each, until the last of them is
        listed; one re-read for an event may be listed or searched after; one a project
        listing delivers in a run that searches may be among the search's results (or
        the sweep's re-reads). Any other task is delivered once, so a run keeps no gid
        per task, and a multi-homed one only until its projects are all listed.
        """
        if "memberships" in self.scope_skipped_fields:
            return True  # where else it lives cannot be told
        gid = str(record.get("gid"))
        users_ahead = self._assigned_ahead
        if (
            gid in self._reread
            or self.prefetches.holds(gid)
            or (users_ahead is not None and users_ahead.holds(gid))
        ):
            # An event's re-read comes again, and so does a task a page read ahead holds
            # (a project's or a user's: moved or reassigned meanwhile, that copy is older).
            return True
        context = context or {}
        plan = self._plans.get(str(context.get("workspace_gid")))
        projects = deletes.memberships_of(record)
        if len(projects) > 1 and (plan is None or not projects <= plan.projects.keys()):
            return True  # a project of it is still to be listed (or may be)
        if context.get(SWEEP):
            return False  # the workspace's last source: its re-reads came first
        return plan is not None and (
            gid in plan.rereads_in_sweep
            or changed_tasks.searched_again(plan, record)
            # Found in no project by the search running meanwhile, now listed: moved
            # into a project since; the sweep's older copy must not overwrite this one.
            or (plan.unplaced_search is not None and plan.unplaced_search.waiting(gid))
        )

    def _previous_bookmark(self, context: Context | None) -> datetime.datetime | None:
        """None in the sweep: a search result is changed by definition."""
        if (context or {}).get(SWEEP):
            return None
        return super()._previous_bookmark(context)

    def _events_granted(self) -> bool:
        granted = scopes.granted_scopes(self.config)
        if granted is None:
            return True
        self._events_unavailable(
            "the Events API needs a token with full permissions (oauth_scopes is granular)"
        )
        return False

    def _events_unavailable(self, reason: str) -> None:
        self.events_off = reason
        if not self._events_warned:
            self._events_warned = True
            self.logger.warning(
                "Not reading Asana's events in this run: %s. Deleted tasks, stories and "
                "sections and moved tasks are not marked deleted (see the README, Deletes).",
                reason,
            )

    def _read_project_events(self, context: Context) -> deletes.EventsResult | None:
        """The project's events since its token (None: events are not read in this run).

        A token Asana refused before anything was listed makes this run the reconcile.
        """
        if self.events_off is not None or not self._events_granted():
            return None
        project = str(context["project_gid"])
        state = deletes.project_events_state(self, context)
        try:
            result = deletes.read_events(
                self,
                project,
                state.get(deletes.SYNC_STATE_KEY),
                value_fields=frozenset(self._value_removal_streams()),
            )
        except ScopeMissingError as exc:
            self._events_unavailable(str(exc))
            return None
        result.received_at = format_timestamp(self.services.server_clock.latest())
        if result.expired:
            self._reconcile_at_once(f"project {project}")
        return result

    def _reconcile_at_once(self, refused: str) -> None:
        """Asana refused an events token: reconcile in this run if not decided yet.

        Decided at the first project, after its events and before any listing; a
        token refused later asks the next run (``reconciling.request``).
        """
        if self._reconcile is None:
            self._reconcile = reconciling.plan(self, refused=refused)

    def _from_events(self, context: Context, result: deletes.EventsResult) -> Iterable[dict]:
        """Tasks the project's events name, read again; tombstones once all is written."""
        project = str(context["project_gid"])
        state = deletes.project_events_state(self, context)
        received_at = result.received_at
        changes = result.changes
        if changes.touched_sections or result.expired:
            # (Expired: events of its sections may have been missed; read them again.)
            project_children.note_section_events(self, project)
        if result.expired:
            self.logger.warning(
                "Asana's events token for project %s expired (not read for 24 h or more): "
                "tasks, stories or sections deleted in that gap are not marked deleted; "
                "%s reconciles tasks. Run the tap at least daily.",
                project,
                "this run" if self.reconcile.due else "the next run",
            )
        previous_bookmark = sdk_adapter.bookmark_value(self, context)
        # Tasks a value was removed from are read again too: their current record says
        # whether the value is still gone (Asana's docs: ``modified_at`` may not reflect
        # changes of associations, so the listing may not bring them).
        to_read = set(changes.reread_tasks) | changes.value_removal_tasks()
        reread = list(deletes.reread(self, to_read, changes))
        self._reread = {str(record["gid"]) for record in reread}
        emitted = {str(record["gid"]): deletes.memberships_of(record) for record in reread}
        current = self._current_after_events(changes, reread)

        def finish() -> None:
            # Every record of the project is written: tombstones next, then the token,
            # so a run stopped before this point reads the same events again.
            now = format_timestamp(datetime.datetime.now(datetime.timezone.utc))
            deletes.write_tombstones(self, changes, emitted, now=now)
            self._write_value_tombstones(changes, current)
            if reread and previous_bookmark:
                # A re-read task may be older than the bookmark; the SDK would make it
                # the new one and the next run would list the project again.
                sdk_adapter.advance_bookmark(self, {"modified_at": previous_bookmark}, context)
            if result.sync:
                state[deletes.SYNC_STATE_KEY] = result.sync
                if received_at:
                    state[deletes.RECEIVED_STATE_KEY] = received_at
            if result.expired:
                state[deletes.EXPIRED_STATE_KEY] = now
                reconciling.request(self)

        self.after_emit(finish)
        # Emitted under the project it is in now (``project_gid`` says where a task was
        # listed): a task moved out is emitted by its new project's events, unless it is
        # in no project any more.
        yield from (
            r for r in reread if project in emitted[str(r["gid"])] or not emitted[str(r["gid"])]
        )

    @staticmethod
    def _current_after_events(
        changes: deletes.ProjectChanges, reread: list[dict[str, t.Any]]
    ) -> dict[str, dict[str, t.Any] | None]:
        """Each task the events named, as read again (None: deleted)."""
        return {
            **dict.fromkeys(changes.deleted_tasks),
            **{str(record["gid"]): record for record in reread},
        }

    def _write_value_tombstones(
        self,
        changes: deletes.ProjectChanges,
        current: Mapping[str, dict[str, t.Any] | None],
    ) -> None:
        """Tombstones of the derived pairs whose removal the events report (derived.py)."""
        for name, derived in self._value_removal_streams().items():
            removals = [r for r in changes.removed_values.values() if r.field == name]
            tombstones = derived.event_tombstones(removals, current)
            purge.write_tombstones(self.services.purges, derived, tombstones)

    def _value_removal_streams(self) -> dict[str, t.Any]:
        """Selected derived tables marking values removed per events, by task field.

        (Derived tables are this stream's children; derived.py imports this module, so
        they are recognised by their ``removals_from_events`` flag, not their class.)
        """
        return {
            child.task_field: child
            for child in self.child_streams
            if getattr(child, "removals_from_events", False) and child.selected
        }

    def always_emit(self, record: dict[str, t.Any]) -> bool:
        """Tasks re-read because an event named them (moved without a new modified_at)."""
        return str(record.get("gid")) in self._reread

    def parse_response(self, response: requests.Response) -> Iterable[dict[str, t.Any]]:
        """An events answer is one pseudo-record (events, token, has_more)."""
        if deletes.is_events_response(response):
            return [deletes.events_page(response)]
        return super().parse_response(response)

    def validate_response(self, response: requests.Response) -> None:
        """As any request, but a refused events request never turns the tasks stream off.

        403/404/402 on the events of a project skip that project's events only (nothing
        is marked deleted); a scope refusal stops reading events for the run.
        """
        if not deletes.is_events_response(response):
            super().validate_response(response)
            return
        try:
            self.transport.check(response, listing="events")
        except ScopeMissingError:
            raise
        except RefusedError as exc:
            if exc.status in self.tolerated_statuses:
                raise SkippedObjectError(exc.status, str(exc)) from None
            raise

    # --- Reconcile pass (see reconcile.py) -------------------------------------------------

    @property
    def reconcile(self) -> reconciling.Reconcile:
        """The reconcile pass of this run, decided at its first use and kept.

        ``source_records`` reads the first project's (or workspace's) events before its
        first use, so a token Asana refused there makes this run the reconcile pass.
        """
        if self._reconcile is None:
            self._reconcile = reconciling.plan(self)
        return self._reconcile

    def get_starting_timestamp(self, context: Context | None) -> datetime.datetime | None:
        """``modified_since``: none (or ``start_date``) when reconciling, else the bookmark."""
        if self.reconcile.due:
            start = self.config.get("start_date")
            return parse_timestamp(str(start)) if start else None
        read_ahead = self._read_ahead.get(str((context or {}).get("project_gid")))
        if read_ahead is not None:
            # A first page read ahead, before the SDK wrote the project's starting value.
            return parse_timestamp(str(read_ahead[1])) if read_ahead[1] else None
        return super().get_starting_timestamp(context)

    def on_unchanged(self, record: dict[str, t.Any], context: Context | None) -> None:
        """Reconciling: an unchanged task's row and pairs are written again (no children)."""
        if self.reconcile.due:
            row = self.post_process(dict(record), context)
            if row is not None:
                reconciling.write_unchanged(self, self.reconcile, row)
                if row.get("num_subtasks"):
                    reconciling.read_subtasks_later(self, row)

    def _skip(self, context: Context | None, exc: SkippedObjectError) -> None:
        context = context or {}
        plan = self._plans.get(str(context.get("workspace_gid")))
        if plan is not None and "project_gid" in context:
            plan.cut_off.add(str(context["project_gid"]))
            self._not_every_task_emitted(plan.workspace)
        if self.reconcile.due:
            what = self._context_description(context)
            self.reconcile.problems.append(f"{what} skipped ({exc.status})")
        super()._skip(context, exc)

    def finish_run(self) -> None:
        """After every stream synced: the reconcile pass's ACTIVATE_VERSION, if any."""
        if self._reconcile is not None:
            reconciling.finish(self, self._reconcile)

    # --- Children --------------------------------------------------------------------------

    def get_child_context(
        self,
        record: dict[str, t.Any],
        context: Context | None,  # noqa: ARG002
    ) -> dict[str, t.Any]:
        """What the task's children need of it.

        Its gid and workspace; whether it has subtasks and tracked time (its children
        skip the request where it has none); its ``memberships`` (the rows of
        task_projects); what the derived tables are made of (``derived_fields``).
        """
        return {
            "task_gid": record["gid"],
            "workspace_gid": workspace_of(record),
            "num_subtasks": record.get("num_subtasks"),
            "actual_time_minutes": record.get("actual_time_minutes"),
            "memberships": record.get("memberships"),
            **derived_fields(record),
        }


class SectionsStream(project_children.ProjectChildStream):
    """Sections (columns / headings) of each project."""

    name = "sections"
    full_read_level = full_reads.PROJECT
    path = "/projects/{project_gid}/sections"
    required_scope = None  # full permissions only
    parent_stream_type = ProjectsStream
    context_label = ("project", "project_gid")
    prefetch = True


class ProjectMembershipsStream(project_children.ProjectChildStream):
    """Who is a member of each project, with what access level."""

    name = "project_memberships"
    full_read_level = full_reads.PROJECT
    path = "/projects/{project_gid}/project_memberships"
    required_scope = None  # full permissions only
    parent_stream_type = ProjectsStream
    context_label = ("project", "project_gid")
    prefetch = True


class ProjectCustomFieldSettingsStream(project_children.ProjectChildStream):
    """Which custom fields each project uses."""

    name = "project_custom_field_settings"
    full_read_level = full_reads.PROJECT
    path = "/projects/{project_gid}/custom_field_settings"
    required_scope = "projects:read"
    parent_stream_type = ProjectsStream
    context_label = ("project", "project_gid")
    prefetch = True


class StatusUpdatesStream(project_children.ProjectChildStream):
    """Status updates of each project (the replacement for project statuses)."""

    name = "status_updates"
    full_read_level = full_reads.PROJECT
    path = "/status_updates"
    required_scope = None  # full permissions only
    parent_stream_type = ProjectsStream
    context_params: t.ClassVar[dict[str, str]] = {"parent": "project_gid"}
    context_label = ("project", "project_gid")
    prefetch = True
