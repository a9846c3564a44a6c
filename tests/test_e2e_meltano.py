"""End to end: `meltano run tap-asana-vl target-postgres` into a real PostgreSQL.

The test suite starts the fake Asana and a throw-away PostgreSQL server, installs the
plugins exactly as meltano.yml defines them, and checks what lands in the warehouse,
then that a second run (with the state Meltano stored) applies only the changes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tap_asana_vl.tap import STREAM_TYPES
from tests.fake_asana import FakeAsana, build_dataset
from tests.fake_asana.dataset import parse_iso_ms
from tests.postgres_server import PostgresServer, PostgresUnavailableError, running_postgres

REPO = Path(__file__).resolve().parent.parent
MELTANO_VERSION = "4.4.1"
STATE_ID = "dev:tap-asana-vl-to-target-postgres"
KEYS = {stream_type.name: stream_type.primary_keys for stream_type in STREAM_TYPES}


def _unavailable(reason: str) -> None:
    # In CI every test must really run: a missing prerequisite is a failure there.
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (CI=true: the end-to-end test may not be skipped)")
    pytest.skip(f"{reason}; run scripts/test.sh to install what it needs")


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for this module's tests."""
    try:
        with running_postgres() as server:
            yield server
    except PostgresUnavailableError as exc:
        _unavailable(str(exc))


@pytest.fixture(scope="module")
def meltano_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of our meltano.yml, pointing at this checkout, with plugins installed."""
    if _uv() is None:
        _unavailable("uv is not installed (it runs Meltano)")
    project = tmp_path_factory.mktemp("meltano-project")
    text = (REPO / "meltano.yml").read_text()
    # The only change: install the tap from this checkout instead of the project dir.
    assert "pip_url: -e .\n" in text
    (project / "meltano.yml").write_text(text.replace("pip_url: -e .\n", f"pip_url: -e {REPO}\n"))
    _meltano(project, "install", timeout=1200)
    return project


def _uv() -> str | None:
    """The uv executable: `uv run` says where it is; else look on PATH."""
    return os.environ.get("UV") or shutil.which("uv")


def _meltano(
    project: Path, *args: str, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess[str]:
    uv = _uv() or "uv"
    command = [uv, "tool", "run", "--from", f"meltano=={MELTANO_VERSION}", "meltano", *args]
    full_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TAP_ASANA_VL_", "TARGET_"))
    }
    # Meltano's uv venv backend looks for uv on PATH.
    full_env["PATH"] = os.pathsep.join([str(Path(uv).parent), full_env.get("PATH", "")])
    full_env.update(env or {})
    full_env["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    proc = subprocess.run(
        command,
        cwd=project,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"meltano {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def _env(fake: FakeAsana, postgres: PostgresServer) -> dict[str, str]:
    return {
        "TAP_ASANA_VL_ACCESS_TOKEN": fake.pat,
        "TAP_ASANA_VL_API_URL": fake.api_url,
        "TAP_ASANA_VL_MAX_REQUESTS_PER_MINUTE": "100000",
        "TARGET_POSTGRES_HOST": postgres.host,
        "TARGET_POSTGRES_PORT": str(postgres.port),
        "TARGET_POSTGRES_USER": postgres.user,
        "TARGET_POSTGRES_PASSWORD": postgres.password,
        "TARGET_POSTGRES_DATABASE": postgres.database,
        "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": "asana",
        # The target's default, stated so that this test keeps proving it: every record
        # is validated against its stream's SCHEMA, and one refusal fails the load.
        "TARGET_POSTGRES_VALIDATE_RECORDS": "true",
    }


def _query(postgres: PostgresServer, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(postgres.dsn) as conn:
        return conn.execute(sql, params).fetchall()


def _counts(postgres: PostgresServer) -> dict[str, tuple[int, int]]:
    """Rows and distinct primary keys per table."""
    counts = {}
    for stream, key in KEYS.items():
        columns = ", ".join(key)
        sql = f"select count(*), count(distinct ({columns})) from asana.{stream}"
        counts[stream] = _query(postgres, sql)[0]
    return counts


def _expected_counts(ds: Any) -> dict[str, int]:
    """What the fake holds, per stream."""
    counts = {name: len(getattr(ds, name)) for name in KEYS if hasattr(ds, name)}
    counts["sections"] = sum(len(s) for s in ds.sections_by_project.values())
    counts["project_custom_field_settings"] = len(ds.custom_field_settings)
    counts["portfolio_items"] = sum(len(p) for p in ds.portfolio_items.values())
    counts["task_projects"] = sum(len(t["memberships"]) for t in ds.tasks.values())
    counts.update(_expected_derived_counts(ds))
    assert set(counts) == set(KEYS)
    return counts


def _column_types(postgres: PostgresServer, table: str) -> dict[str, str]:
    rows = _query(
        postgres,
        "select column_name, data_type from information_schema.columns "
        "where table_schema = 'asana' and table_name = %s",
        table,
    )
    return dict(rows)


def _udt(postgres: PostgresServer, table: str, column: str) -> str:
    rows = _query(
        postgres,
        "select udt_name from information_schema.columns "
        "where table_schema = 'asana' and table_name = %s and column_name = %s",
        table,
        column,
    )
    return str(rows[0][0])


def test_meltano_run_loads_postgres_and_applies_changes_incrementally(
    postgres: PostgresServer, meltano_project: Path
) -> None:
    with FakeAsana(build_dataset(seed=21)) as fake:
        # Each project's events (as where Asana refuses a workspace's): they name the
        # project of a deleted task, so its task_projects rows are marked at once. A
        # workspace's events do not; those wait for the reconcile (test_workspace_events).
        fake.workspace_events_workspaces = set()
        ds = fake.dataset
        env = _env(fake, postgres)
        expected = _expected_counts(ds)

        # --- First run: everything lands, once, with warehouse-friendly types.
        _meltano(meltano_project, "run", "tap-asana-vl", "target-postgres", env=env)
        assert _counts(postgres) == {s: (n, n) for s, n in expected.items()}

        tasks = _column_types(postgres, "tasks")
        assert tasks["gid"] in {"text", "character varying"}
        assert tasks["created_at"] == "timestamp without time zone"
        assert tasks["modified_at"] == "timestamp without time zone"
        assert tasks["completed"] == "boolean"
        assert tasks["assignee"] == "jsonb"
        # target-postgres 0.8.1 turns arrays into PostgreSQL arrays (jsonb[] for arrays
        # of objects), not a single jsonb value.
        assert tasks["memberships"] == "ARRAY"
        assert _udt(postgres, "tasks", "memberships") == "_jsonb"
        assert _udt(postgres, "workspaces", "email_domains") in {"_text", "_varchar"}
        assert _column_types(postgres, "stories")["created_at"] == "timestamp without time zone"

        some_task = next(iter(ds.tasks.values()))
        name, modified_at = _query(
            postgres,
            'select name, to_char(modified_at, \'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"\') '
            "from asana.tasks where gid = %s",
            some_task["gid"],
        )[0]
        assert name == some_task["name"]
        # target-postgres 0.8.1 creates `timestamp` (no time zone) columns; they must
        # hold UTC whatever the server's time zone (meltano.yml sets PGTZ=UTC).
        assert modified_at == some_task["modified_at"]
        _check_analyst_queries(postgres, ds)

        # --- The same full sync through target-jsonl, which validates every record too.
        output = meltano_project / "jsonl-output"
        jsonl_env = {**env, "TARGET_JSONL_DESTINATION_PATH": str(output)}
        _meltano(meltano_project, "run", "tap-asana-vl", "target-jsonl", env=jsonl_env)
        lines = {
            path.stem: len(path.read_text(encoding="utf-8").splitlines())
            for path in output.glob("*.jsonl")
        }
        assert lines == expected

        # --- Meltano stored per-project task bookmarks.
        state = json.loads(_meltano(meltano_project, "state", "get", STATE_ID, env=env).stdout)
        partitions = state["singer_state"]["bookmarks"]["tasks"]["partitions"]
        assert {p["context"]["project_gid"] for p in partitions} == set(ds.projects)

        # --- Changes in Asana, then a second run with that state.
        changed = [list(ds.tasks)[1], list(ds.tasks)[30]]
        fake.touch_task(changed[0])
        fake.dataset.tasks[changed[0]]["name"] = "Renamed in Asana"
        fake.touch_task(changed[0])
        new_story = fake.add_story(changed[1], text="Added between runs")
        fake.reset_log()

        _meltano(meltano_project, "run", "tap-asana-vl", "target-postgres", env=env)

        counts = _counts(postgres)
        assert counts["tasks"] == (expected["tasks"], expected["tasks"])
        assert counts["stories"] == (expected["stories"] + 1, expected["stories"] + 1)
        assert _query(postgres, "select name from asana.tasks where gid = %s", changed[0]) == [
            ("Renamed in Asana",)
        ]
        assert _query(postgres, "select text from asana.stories where gid = %s", new_story["gid"])
        # Only the changed tasks' stories were requested (and no subtask's: none changed).
        story_paths = {r.path for r in fake.requests if r.path.endswith("/stories")}
        changed_subtasks = {s["gid"] for s in ds.subtasks.values() if s["parent"]["gid"] in changed}
        below = changed_subtasks | {
            s["gid"] for s in ds.subtasks.values() if s["parent"]["gid"] in changed_subtasks
        }
        assert story_paths == {f"/api/1.0/tasks/{gid}/stories" for gid in set(changed) | below}

        # --- Deletes and moves (Asana's events): tombstones, and nothing else marked.
        deleted_task, moved_task, commented, project, other = _delete_and_move_targets(ds)
        deleted_story = ds.stories_by_task[commented["gid"]][0]
        empty_sections = [_empty_section(ds)]
        fake.delete_task(deleted_task["gid"])
        fake.delete_story(deleted_story["gid"])
        for section in empty_sections:
            fake.delete_section(section["gid"])
        # Moved without a new modified_at: only the events tell.
        fake.move_task(moved_task["gid"], remove_from=project, add_to=other)
        # A follower removed: no story says so, the event on the task does (issue 16).
        unfollowed = next(
            t
            for t in ds.tasks.values()
            if len(t["followers"]) > 1
            and t["gid"] not in {deleted_task["gid"], moved_task["gid"], *changed}
        )
        gone_follower = unfollowed["followers"][0]["gid"]
        fake.remove_from_task(unfollowed["gid"], "followers", gone_follower)

        _meltano(meltano_project, "run", "tap-asana-vl", "target-postgres", env=env)

        marked = {
            table: set(
                _query(
                    postgres,
                    f"select {', '.join(KEYS[table])} from asana.{table} "
                    "where _sdc_deleted_at is not null",
                )
            )
            for table in ("tasks", "stories", "sections", "task_projects")
        }
        assert marked == {
            "tasks": {(deleted_task["gid"],)},
            "stories": {(deleted_story["gid"],)},
            "sections": {(s["gid"],) for s in empty_sections},
            "task_projects": {(deleted_task["gid"], project), (moved_task["gid"], project)},
        }
        follower_rows = _query(
            postgres,
            "select task_gid, user_gid, _sdc_deleted_at from asana.task_followers "
            "where _sdc_deleted_at is not null",
        )
        assert [(task, user) for task, user, _ in follower_rows] == [
            (unfollowed["gid"], gone_follower)
        ]
        removal = next(
            e
            for _, _, _, e in ds.events
            if e["action"] == "changed" and e["resource"]["gid"] == unfollowed["gid"]
        )
        assert follower_rows[0][2] == datetime.fromisoformat(removal["created_at"]).replace(
            tzinfo=None
        )
        # The moved task's new pair is there, live.
        assert _query(
            postgres,
            "select _sdc_deleted_at from asana.task_projects "
            "where task_gid = %s and project_gid = %s",
            moved_task["gid"],
            other,
        ) == [(None,)]
        # What target-postgres 0.8.1 does with an upserted tombstone: it updates every
        # column of the schema, so the row keeps its key, the name the event carried
        # and the deletion time; the other columns become null (see the README).
        assert _query(
            postgres,
            "select name, notes, _sdc_deleted_at is not null from asana.tasks where gid = %s",
            deleted_task["gid"],
        ) == [(deleted_task["name"], None, True)]

        # --- Reconcile pass: a delete whose event was lost (Asana keeps events 24 h and
        # delivers them at most once) reaches task_projects through ACTIVATE_VERSION.
        lost = next(
            t
            for t in ds.tasks.values()
            if len(t["projects"]) == 1
            and t["gid"] not in {moved_task["gid"], unfollowed["gid"], *changed}
        )
        fake.delete_task(lost["gid"])
        # (Issue 14, complete reads) A tag and a subtask deleted too: no event covers
        # them; the run reads tags and (reconciling) every subtree in full.
        with ds.lock:
            deleted_tag = next(tags for tags in ds.tags_by_workspace.values() if tags).pop(0)
            ds.version += 1
        deleted_subtask = next(iter(ds.subtasks.values()))
        fake.delete_task(deleted_subtask["gid"])
        with ds.lock:
            ds.events.clear()
        reconcile_env = {**env, "TAP_ASANA_VL_RECONCILE_EVERY_DAYS": "0"}
        _meltano(meltano_project, "run", "tap-asana-vl", "target-postgres", env=reconcile_env)
        # Marked exactly what is gone from Asana: the tag, the subtask (and the subtasks
        # of the tasks deleted earlier, and their comments), the task whose event was
        # lost; nothing else.
        live = {
            "tags": {t["gid"] for tags in ds.tags_by_workspace.values() for t in tags},
            "subtasks": set(ds.subtasks),
            "subtask_stories": set(ds.subtask_stories),
            "tasks": set(ds.tasks),
        }
        for table, gids in live.items():
            rows = dict(_query(postgres, f"select gid, _sdc_deleted_at from asana.{table}"))
            assert {gid for gid, at in rows.items() if at} == set(rows) - gids, table
        assert deleted_tag["gid"] in rows_marked(postgres, "tags")
        assert deleted_subtask["gid"] in rows_marked(postgres, "subtasks")
        assert lost["gid"] in rows_marked(postgres, "tasks")
        for table in FULL_READ_TABLES - set(live):
            assert rows_marked(postgres, table) == set(), table
        now_marked = set(
            _query(
                postgres,
                "select task_gid, project_gid from asana.task_projects "
                "where _sdc_deleted_at is not null",
            )
        )
        assert now_marked == marked["task_projects"] | {(lost["gid"], lost["projects"][0]["gid"])}
        # A soft delete by ACTIVATE_VERSION keeps the row's other columns.
        assert _query(
            postgres,
            "select project_name is not null from asana.task_projects where task_gid = %s",
            lost["gid"],
        ) == [(True,)]
        # The derived tables: what is current in PostgreSQL is exactly what the fake's
        # tasks and subtasks hold now; every other pair (those of the deleted tasks and
        # subtask, the removed follower, fields of a project the moved task left) marked.
        _check_derived_pairs_are_current(postgres, ds)
        marked_followers = set(
            _query(
                postgres,
                "select task_gid, user_gid from asana.task_followers "
                "where _sdc_deleted_at is not null",
            )
        )
        assert (unfollowed["gid"], gone_follower) in marked_followers
        assert {(deleted_task["gid"], u["gid"]) for u in deleted_task["followers"]} <= (
            marked_followers
        )
        assert {(lost["gid"], u["gid"]) for u in lost["followers"]} <= marked_followers

        # --- A full refresh reloads everything without duplicating a row.
        _meltano(
            meltano_project, "run", "--full-refresh", "tap-asana-vl", "target-postgres", env=env
        )
        counts = _counts(postgres)
        assert counts["tasks"] == (expected["tasks"], expected["tasks"])
        assert counts["stories"] == (expected["stories"] + 1, expected["stories"] + 1)
        story_paths = {r.path for r in fake.requests if r.path.endswith("/stories")}
        assert {p.split("/")[4] for p in story_paths} == set(ds.tasks) | set(ds.subtasks)


#: Derived task tables: the task field each is made of, and its value's key column.
DERIVED_PAIRS = {
    "task_tags": ("tags", "tag_gid"),
    "task_followers": ("followers", "user_gid"),
    "task_dependencies": ("dependencies", "depends_on_gid"),
    "task_custom_field_values": ("custom_fields", "custom_field_gid"),
}


def _check_derived_pairs_are_current(postgres: PostgresServer, ds: Any) -> None:
    """After a reconcile: unmarked rows = the fake's current pairs (set values only)."""
    tasks = {**ds.tasks, **ds.subtasks}
    for table, (field, column) in DERIVED_PAIRS.items():
        rows = _query(
            postgres,
            f"select task_gid, {column}, _sdc_deleted_at is null from asana.{table}",
        )
        current = {
            (gid, item["gid"])
            for gid, task in tasks.items()
            for item in task[field]
            # A custom field listed without a value is a marked row (the README).
            if item.get("display_value") not in (None, "") or field != "custom_fields"
        }
        assert {(task, value) for task, value, live in rows if live} == current, table


#: Tables whose rows a complete read may mark (full_reads.py); tags checked apart.
FULL_READ_TABLES = {
    "tags",
    "custom_fields",
    "projects",
    "users",
    "teams",
    "team_memberships",
    "portfolios",
    "goals",
    "project_memberships",
    "project_custom_field_settings",
    "status_updates",
}


def rows_marked(postgres: PostgresServer, table: str) -> set[str]:
    """Gids of the rows of ``table`` marked deleted."""
    sql = f"select gid from asana.{table} where _sdc_deleted_at is not null"
    return {gid for (gid,) in _query(postgres, sql)}


def _delete_and_move_targets(ds: Any) -> tuple[dict, dict, dict, str, str]:
    """A task to delete, one to move, one whose story to delete (all in one project
    only, none touched by the earlier steps), that project and another one."""
    for project, tasks in ds.tasks_by_project.items():
        alone = [t for t in tasks[2:] if len(t["projects"]) == 1 and ds.stories_by_task[t["gid"]]]
        if len(alone) >= 3:
            other = next(p for p in ds.projects if p != project)
            return alone[0], alone[1], alone[2], project, other
    raise AssertionError("the dataset has no project with three single-homed tasks")


def _empty_section(ds: Any) -> dict[str, Any]:
    """A section no task is in (Asana deletes only those), of any project."""
    for project, sections in ds.sections_by_project.items():
        used = {
            (m.get("section") or {}).get("gid")
            for task in ds.tasks_by_project[project]
            for m in task["memberships"]
        }
        for section in sections:
            if section["gid"] not in used:
                return section
    raise AssertionError("the dataset has no empty section")


# --- Derived tables and the README's "Query it" queries (issue #16) ---------------------


def _expected_derived_counts(ds: Any) -> dict[str, int]:
    """Rows of the derived tables the fake's data makes (tasks and subtasks)."""
    tasks = [*ds.tasks.values(), *ds.subtasks.values()]
    stories = [*ds.stories.values(), *ds.subtask_stories.values()]
    return {
        "task_custom_field_values": sum(len(t["custom_fields"]) for t in tasks),
        "project_custom_field_values": sum(len(p["custom_fields"]) for p in ds.projects.values()),
        "task_tags": sum(len(t["tags"]) for t in tasks),
        "task_followers": sum(len(t["followers"]) for t in tasks),
        "task_dependencies": sum(len(t["dependencies"]) for t in tasks),
        "task_history": sum(
            s["type"] == "system" and s["resource_subtype"] != "comment_liked" for s in stories
        ),
    }


def readme_queries() -> list[str]:
    """The SQL blocks of the README's "Query it" section, as written there."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Query it\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)


def _check_analyst_queries(postgres: PostgresServer, ds: Any) -> None:
    """Each README query, run on the loaded warehouse, answers what the fake holds."""
    queries = readme_queries()
    assert len(queries) == 5
    # Typed columns, and cleared values marked deleted as the tap sent them.
    values = _column_types(postgres, "task_custom_field_values")
    assert values["number_value"] in {"numeric", "double precision"}
    assert values["date_value"] == "date"
    assert values["date_time_value"] == "timestamp without time zone"
    assert _udt(postgres, "task_custom_field_values", "people_gids") in {"_text", "_varchar"}
    cleared = sum(
        cf["display_value"] in (None, "")
        for t in [*ds.tasks.values(), *ds.subtasks.values()]
        for cf in t["custom_fields"]
    )
    assert cleared, "the fake has no empty custom field value: the check would prove nothing"
    sql = "select count(*) from asana.task_custom_field_values where _sdc_deleted_at is not null"
    assert _query(postgres, sql) == [(cleared,)]
    users = {gid: user["name"] for gid, user in ds.users.items()}

    # 1. Open tasks per project and section, with the assignee's name.
    expected_open = sorted(
        (
            ds.projects[m["project"]["gid"]]["name"],
            m["section"]["name"],
            t["name"],
            users.get((t["assignee"] or {}).get("gid")),
        )
        for t in ds.tasks.values()
        if not t["completed"]
        for m in t["memberships"]
    )
    rows = _query(postgres, queries[0])
    assert rows
    assert sorted(rows, key=repr) == sorted(expected_open, key=repr)

    # 2. Tasks by custom field value (enum, number range, date).
    def value(task: dict[str, Any], name: str) -> dict[str, Any]:
        return next((cf for cf in task["custom_fields"] if cf["name"] == name), {})

    matching = set()
    for gid, task in ds.tasks.items():
        priority = (value(task, "Priority").get("enum_value") or {}).get("name")
        estimate = value(task, "Estimate").get("number_value")
        launch = (value(task, "Launch date").get("date_value") or {}).get("date")
        if (
            priority == "High"
            or (estimate is not None and 10 <= estimate <= 20)
            or (launch is not None and "2024-01-01" <= launch <= "2024-06-30")
        ):
            matching.add(gid)
    rows = _query(postgres, queries[1])
    assert {row[0] for row in rows} == matching
    assert any(row[2] == "High" for row in rows)
    assert any(row[3] is not None and 10 <= row[3] <= 20 for row in rows)
    assert any(row[4] is not None for row in rows)

    # 3. Tasks per tag.
    per_tag = Counter(
        (tag["gid"], tag["name"])
        for t in [*ds.tasks.values(), *ds.subtasks.values()]
        for tag in t["tags"]
    )
    rows = _query(postgres, queries[2])
    assert {(gid, name): n for gid, name, n in rows} == per_tag

    # 4. Median time from creation to completion per project.
    durations: dict[str, list[float]] = {}
    for t in ds.tasks.values():
        if t["completed"]:
            seconds = (_ms(t["completed_at"]) - _ms(t["created_at"])) / 1000
            for m in t["memberships"]:
                durations.setdefault(ds.projects[m["project"]["gid"]]["name"], []).append(seconds)
    rows = _query(postgres, queries[3])
    assert {project for project, _, _ in rows} == set(durations)
    for project, median_days, count in rows:
        assert count == len(durations[project])
        assert abs(median_days - statistics.median(durations[project]) / 86400) < 1e-6

    # 5. Time spent per section, from task_history's section changes.
    hours: Counter[str] = Counter()
    moves_out: Counter[str] = Counter()
    moves = sorted(
        (s for s in ds.stories.values() if s["resource_subtype"] == "section_changed"),
        key=lambda s: s["created_at"],
    )
    last: dict[tuple[str, str], str] = {}
    for story in moves:
        if "old_section" not in story:
            continue
        task = ds.tasks[story["target"]["gid"]]
        key = (task["gid"], story["project"]["gid"])
        entered = last.get(key, task["created_at"])
        hours[story["old_section"]["name"]] += (_ms(story["created_at"]) - _ms(entered)) / 3.6e6
        moves_out[story["old_section"]["name"]] += 1
        last[key] = story["created_at"]
    assert moves_out, "the fake's data has no section change: the query would prove nothing"
    rows = _query(postgres, queries[4])
    assert {section: n for section, _, n in rows} == dict(moves_out)
    for section, spent, _ in rows:
        assert abs(float(spent) - hours[section]) < 1e-6


def _ms(stamp: str) -> int:
    return parse_iso_ms(stamp)


# --- hard_delete: true (issue 14): tombstones removed, nothing else changed -------------

#: Columns the target adds; they differ between two loads of the same rows.
SDC_COLUMNS = (
    "_sdc_extracted_at",
    "_sdc_received_at",
    "_sdc_batched_at",
    "_sdc_deleted_at",
    "_sdc_sequence",
    "_sdc_table_version",
    "_sdc_sync_started_at",
)


def _rows(postgres: PostgresServer, schema: str, table: str) -> dict[tuple[Any, ...], Any]:
    """Every row of ``table`` by key: (its columns but the target's, marked deleted)."""
    drop = ", ".join(f"'{c}'" for c in SDC_COLUMNS)
    key = ", ".join(KEYS[table])
    sql = (
        f"select {key}, (to_jsonb(t) - array[{drop}])::text, _sdc_deleted_at is not null "
        f"from {schema}.{table} t"
    )
    width = len(KEYS[table])
    return {row[:width]: (row[width], row[width + 1]) for row in _query(postgres, sql)}


def test_hard_delete_removes_deleted_rows_and_changes_nothing_else(
    postgres: PostgresServer, meltano_project: Path
) -> None:
    """The same runs into two schemas, with and without ``hard_delete``; compare them."""
    with FakeAsana(build_dataset(seed=22)) as fake:
        # Each project's events (as where Asana refuses a workspace's): they name the
        # project of a deleted task, so its task_projects rows are marked at once. A
        # workspace's events do not; those wait for the reconcile (test_workspace_events).
        fake.workspace_events_workspaces = set()
        ds = fake.dataset
        loads = {
            schema: {
                **_env(fake, postgres),
                "TARGET_POSTGRES_DEFAULT_TARGET_SCHEMA": schema,
                "TARGET_POSTGRES_HARD_DELETE": str(hard).lower(),
            }
            for schema, hard in (("asana_hard", True), ("asana_soft", False))
        }

        def run_both(**tap_env: str) -> None:
            for schema, env in loads.items():
                # Each schema has its own state (sync tokens, floors).
                suffix = ("--state-id-suffix", schema)
                _meltano(
                    meltano_project,
                    *("run", *suffix, "tap-asana-vl", "target-postgres"),
                    env={**env, **tap_env},
                )

        # A first run, then a reconcile: tasks and task_projects get their floor (every
        # live row re-written with one version), sections theirs (a complete read: every
        # project's sections re-read, which the first run's refresh would otherwise
        # leave to the next refresh).
        run_both()
        run_both(
            TAP_ASANA_VL_RECONCILE_EVERY_DAYS="0", TAP_ASANA_VL_PROJECT_CHILDREN_REFRESH_DAYS="0"
        )
        assert _rows(postgres, "asana_hard", "tasks") == _rows(postgres, "asana_soft", "tasks")

        deleted_task, moved_task, commented, project, other = _delete_and_move_targets(ds)
        deleted_story = ds.stories_by_task[commented["gid"]][0]
        empty_sections = [_empty_section(ds)]
        fake.delete_task(deleted_task["gid"])
        fake.delete_story(deleted_story["gid"])
        for section in empty_sections:
            fake.delete_section(section["gid"])
        fake.move_task(moved_task["gid"], remove_from=project, add_to=other)
        # Not a reconcile (the last one is recent): deletes come from Asana's events.
        run_both()

        # Stories have a floor too (the first run read every story; the reconcile
        # confirmed it): the deleted comment is gone with hard_delete.
        gone = {
            "tasks": {(deleted_task["gid"],)},
            "task_projects": {(deleted_task["gid"], project), (moved_task["gid"], project)},
            "sections": {(s["gid"],) for s in empty_sections},
            "stories": {(deleted_story["gid"],)},
        }
        exists = {
            "tasks": {(gid,) for gid in ds.tasks},
            "task_projects": {
                (t["gid"], m["project"]["gid"]) for t in ds.tasks.values() for m in t["memberships"]
            },
            "sections": {(s["gid"],) for ss in ds.sections_by_project.values() for s in ss},
        }
        # The derived task tables have their floor too (the reconcile): every row marked
        # in them (a cleared custom field, a removed value) is a tombstone, gone with
        # hard_delete.
        derived = {
            "task_custom_field_values",
            "task_tags",
            "task_followers",
            "task_dependencies",
        }
        cleared = _rows(postgres, "asana_soft", "task_custom_field_values")
        assert any(marked for _, marked in cleared.values())
        for table in KEYS:
            hard = _rows(postgres, "asana_hard", table)
            soft = _rows(postgres, "asana_soft", table)
            removed = gone.get(table, set())
            if table in derived:
                removed = {k for k, (_, marked) in soft.items() if marked}
                assert not any(marked for _, marked in hard.values()), table
            # Soft: the deleted rows are marked. Hard: they are gone; every other row is
            # the same, marked or not as with soft (nothing else deleted or changed).
            assert {k for k, (_, marked) in soft.items() if marked} >= removed, table
            assert hard == {k: v for k, v in soft.items() if k not in removed}, table
            if table in exists:
                assert set(hard) == exists[table], table
                assert not any(marked for _, marked in hard.values()), table
        stories = _rows(postgres, "asana_hard", "stories")
        assert (deleted_story["gid"],) not in stories
        assert not any(marked for _, marked in stories.values())
        assert _query(
            postgres,
            "select _sdc_deleted_at is not null from asana_hard.task_projects "
            "where task_gid = %s and project_gid = %s",
            moved_task["gid"],
            other,
        ) == [(False,)]
