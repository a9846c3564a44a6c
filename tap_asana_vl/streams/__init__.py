"""The tap's streams, grouped by what they are listed under.

- ``workspace_level``: workspaces, and what is listed once per workspace (users,
  projects, tags, custom fields, teams and their members, portfolios and their items,
  goals);
- ``project_level``: once per project (tasks, sections, memberships, custom field
  settings, status updates);
- ``task_level``: once per task emitted in the run (stories, project memberships,
  attachments, time tracking entries);
- ``subtasks``: subtasks below changed tasks and from a sweep of each workspace, and
  their stories;
- ``derived`` and ``history``: tables made of records already fetched (custom field
  values, tags, followers, dependencies, change history), at no request.

They all derive from ``base.AsanaStream`` (records, children; reading from Asana is
``listing.AsanaListing``).
"""

from tap_asana_vl.streams.base import AsanaStream
from tap_asana_vl.streams.derived import (
    DerivedStream,
    ProjectCustomFieldValuesStream,
    TaskCustomFieldValuesStream,
    TaskDependenciesStream,
    TaskFollowersStream,
    TaskTagsStream,
)
from tap_asana_vl.streams.history import TaskHistoryStream
from tap_asana_vl.streams.project_level import (
    ProjectCustomFieldSettingsStream,
    ProjectMembershipsStream,
    SectionsStream,
    StatusUpdatesStream,
    TasksStream,
)
from tap_asana_vl.streams.subtasks import SubtasksStream, SubtaskStoriesStream
from tap_asana_vl.streams.task_level import (
    AttachmentsStream,
    StoriesStream,
    TaskProjectsStream,
    TimeTrackingEntriesStream,
)
from tap_asana_vl.streams.workspace_level import (
    CustomFieldsStream,
    GoalsStream,
    PortfolioItemsStream,
    PortfoliosStream,
    ProjectsStream,
    TagsStream,
    TeamMembershipsStream,
    TeamsStream,
    UsersStream,
    WorkspacesStream,
)

__all__ = [
    "AsanaStream",
    "AttachmentsStream",
    "CustomFieldsStream",
    "DerivedStream",
    "GoalsStream",
    "PortfolioItemsStream",
    "PortfoliosStream",
    "ProjectCustomFieldSettingsStream",
    "ProjectCustomFieldValuesStream",
    "ProjectMembershipsStream",
    "ProjectsStream",
    "SectionsStream",
    "StatusUpdatesStream",
    "StoriesStream",
    "SubtaskStoriesStream",
    "SubtasksStream",
    "TagsStream",
    "TaskCustomFieldValuesStream",
    "TaskDependenciesStream",
    "TaskFollowersStream",
    "TaskHistoryStream",
    "TaskProjectsStream",
    "TaskTagsStream",
    "TasksStream",
    "TeamMembershipsStream",
    "TeamsStream",
    "TimeTrackingEntriesStream",
    "UsersStream",
    "WorkspacesStream",
]
