"""meltano.yml declares every setting as the tap defines it, and Meltano passes each typed.

A setting missing from meltano.yml still "works" in Meltano, as a string:
``meltano config set tap-asana-vl include_subtasks false`` stored ``"false"`` and the run
failed validation, and ``TAP_ASANA_VL_INCLUDE_SUBTASKS`` was ignored. The first tests
compare meltano.yml with the tap's settings (no Meltano needed); the last two run the
pinned Meltano on a copy of meltano.yml and check the config it hands the tap.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tap_asana_vl.settings import ENV_PREFIX, OAUTH_SETTINGS
from tap_asana_vl.tap import TapAsanaVl
from tests.settings_samples import all_settings, as_text, json_types, samples, split_by_auth_mode
from tests.test_e2e_meltano import MELTANO_VERSION, _unavailable, _uv

REPO = Path(__file__).resolve().parent.parent
TAP = "tap-asana-vl"

# Meltano's setting kind for each JSON type (a date-time string is date_iso8601).
KINDS = {
    "string": "string",
    "integer": "integer",
    "number": "decimal",
    "boolean": "boolean",
    "array": "array",
    "object": "object",
}


def meltano_extractor(text: str | None = None) -> dict[str, Any]:
    """The tap's definition in meltano.yml."""
    project = yaml.safe_load(text if text is not None else (REPO / "meltano.yml").read_text())
    (extractor,) = [p for p in project["plugins"]["extractors"] if p["name"] == TAP]
    return extractor


def expected_kind(schema: dict[str, Any]) -> str:
    """The Meltano kind of a setting with this JSON schema."""
    (json_type,) = json_types(schema)
    if json_type == "string" and schema.get("format") == "date-time":
        return "date_iso8601"
    return KINDS[json_type]


def drift(declared: list[dict[str, Any]], settings: dict[str, dict[str, Any]]) -> list[str]:
    """How meltano.yml's settings differ from the tap's, one line per difference."""
    problems = []
    names = [d["name"] for d in declared]
    problems += [
        f"{n}: declared twice in meltano.yml" for n in sorted(set(names)) if names.count(n) > 1
    ]
    problems += [
        f"{n}: a setting of the tap that meltano.yml does not declare"
        for n in settings
        if n not in names
    ]
    problems += [
        f"{n}: declared in meltano.yml but not a setting of the tap"
        for n in names
        if n not in settings
    ]
    for setting in declared:
        name = setting["name"]
        if name not in settings:
            continue
        schema = settings[name]
        kind = expected_kind(schema)
        if setting.get("kind") != kind:
            problems.append(
                f"{name}: kind {setting.get('kind')!r} in meltano.yml, should be {kind!r}"
            )
        has_default = "default" in schema
        if ("value" in setting) != has_default or (
            has_default
            and (setting["value"], type(setting["value"]))
            != (schema["default"], type(schema["default"]))
        ):
            wanted = f"value: {schema['default']!r}" if has_default else "no value"
            problems.append(
                f"{name}: default {setting.get('value')!r} in meltano.yml, should be {wanted}"
            )
        if bool(setting.get("sensitive")) != bool(schema.get("secret")):
            problems.append(
                f"{name}: sensitive must be {bool(schema.get('secret'))} (the tap's secret flag)"
            )
        for key, source in (("label", "title"), ("description", "description")):
            if not setting.get(key) or setting.get(key) != schema.get(source):
                problems.append(f"{name}: {key} must be the tap's {source}: {schema.get(source)!r}")
    return problems


def test_meltano_yml_declares_every_setting_as_the_tap_defines_it():
    problems = drift(meltano_extractor()["settings"], all_settings())
    assert problems == [], "meltano.yml differs from the tap's settings:\n" + "\n".join(problems)


def _setting(declared: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(d for d in declared if d["name"] == name)


def _remove(declared: list[dict[str, Any]], name: str) -> None:
    declared.remove(_setting(declared, name))


# Edits of meltano.yml's settings, each of which the comparison must report.
DRIFTS: list[tuple[str, Callable[[list[dict[str, Any]]], None], str]] = [
    (
        "setting-missing",
        lambda d: _remove(d, "include_subtasks"),
        "include_subtasks: a setting of the tap that meltano.yml does not declare",
    ),
    (
        "unknown-setting",
        lambda d: d.append({"name": "include_subtask", "kind": "boolean"}),
        "include_subtask: declared in meltano.yml but not a setting of the tap",
    ),
    (
        "declared-twice",
        lambda d: d.append(copy.deepcopy(_setting(d, "page_size"))),
        "page_size: declared twice",
    ),
    (
        "boolean-as-string",
        lambda d: _setting(d, "include_attachments").update(kind="string"),
        "include_attachments: kind 'string' in meltano.yml, should be 'boolean'",
    ),
    (
        "integer-as-decimal",
        lambda d: _setting(d, "subtasks_full_walk_days").update(kind="decimal"),
        "subtasks_full_walk_days: kind 'decimal' in meltano.yml, should be 'integer'",
    ),
    (
        "date-as-string",
        lambda d: _setting(d, "start_date").update(kind="string"),
        "start_date: kind 'string' in meltano.yml, should be 'date_iso8601'",
    ),
    (
        "array-as-string",
        lambda d: _setting(d, "project_gids").update(kind="string"),
        "project_gids: kind 'string' in meltano.yml, should be 'array'",
    ),
    (
        "deprecated-password-kind",
        lambda d: _setting(d, "client_secret").update(kind="password"),
        "client_secret: kind 'password' in meltano.yml, should be 'string'",
    ),
    (
        "default-differs",
        lambda d: _setting(d, "max_concurrent_requests").update(value=25),
        "max_concurrent_requests: default 25 in meltano.yml, should be value: 50",
    ),
    (
        "default-as-text",
        lambda d: _setting(d, "include_archived_projects").update(value="true"),
        "include_archived_projects: default 'true' in meltano.yml, should be value: True",
    ),
    (
        "default-missing",
        lambda d: _setting(d, "page_size").pop("value"),
        "page_size: default None in meltano.yml, should be value: 100",
    ),
    (
        "default-invented",
        lambda d: _setting(d, "user_agent").update(value="me"),
        "user_agent: default 'me' in meltano.yml, should be no value",
    ),
    (
        "secret-not-sensitive",
        lambda d: _setting(d, "refresh_token").pop("sensitive"),
        "refresh_token: sensitive must be True",
    ),
    (
        "sensitive-not-secret",
        lambda d: _setting(d, "client_id").update(sensitive=True),
        "client_id: sensitive must be False",
    ),
    (
        "label-missing",
        lambda d: _setting(d, "max_retries").pop("label"),
        "max_retries: label must be the tap's title",
    ),
    (
        "description-stale",
        lambda d: _setting(d, "request_timeout").update(description="Seconds."),
        "request_timeout: description must be the tap's description",
    ),
]


@pytest.mark.parametrize(("edit", "problem"), [d[1:] for d in DRIFTS], ids=[d[0] for d in DRIFTS])
def test_the_comparison_reports_drift_of_meltano_yml(edit, problem):
    declared = copy.deepcopy(meltano_extractor()["settings"])
    edit(declared)
    problems = drift(declared, all_settings())
    assert any(problem in p for p in problems), problems


def test_the_comparison_reports_a_new_setting_of_the_tap():
    settings = all_settings()
    settings["include_goals"] = {"type": ["boolean", "null"], "default": True, "title": "Goals"}
    assert drift(meltano_extractor()["settings"], settings) == [
        "include_goals: a setting of the tap that meltano.yml does not declare"
    ]


def test_settings_group_validation_is_the_tap_auth_modes():
    extractor = meltano_extractor()
    assert extractor["settings_group_validation"] == [["access_token"], list(OAUTH_SETTINGS)]


def test_capabilities_are_the_tap_capabilities():
    # The SDK's built-in settings (stream maps, flattening) follow from them.
    extractor = meltano_extractor()
    assert sorted(extractor["capabilities"]) == sorted(str(c) for c in TapAsanaVl.capabilities)


# --- under Meltano -----------------------------------------------------------------------


def _meltano_project(tmp_path: Path) -> Path:
    """A Meltano project made of our meltano.yml, the tap pointing at this checkout."""
    if _uv() is None:
        _unavailable("uv is not installed (it runs Meltano)")
    text = (REPO / "meltano.yml").read_text()
    assert "pip_url: -e .\n" in text
    (tmp_path / "meltano.yml").write_text(text.replace("pip_url: -e .\n", f"pip_url: -e {REPO}\n"))
    return tmp_path


def _run(
    project: Path, program: str, *args: str, env: dict[str, str] | None = None, stdin: str = ""
) -> str:
    """Run the pinned Meltano's ``program`` in ``project``; its stdout."""
    uv = _uv() or "uv"
    # Nothing of the developer's own Meltano or tap settings may leak in.
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith((ENV_PREFIX, "TARGET_", "MELTANO_"))
    }
    clean["PATH"] = os.pathsep.join([str(Path(uv).parent), clean.get("PATH", "")])
    clean["MELTANO_SEND_ANONYMOUS_USAGE_STATS"] = "false"
    proc = subprocess.run(
        [uv, "tool", "run", "--from", f"meltano=={MELTANO_VERSION}", program, *args],
        cwd=project,
        env={**clean, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"{program} {' '.join(args[:4])} failed:\n{proc.stderr[-4000:]}"
    return proc.stdout


def _config_handed_to_the_tap(project: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """The config file Meltano writes for the tap (no install needed to see it)."""
    out = _run(project, "meltano", "invoke", "--no-install", "--dump=config", TAP, env=env)
    return json.loads(out)


def _assert_typed_and_accepted(config: dict[str, Any], expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        got = config.get(name)
        assert (got, type(got)) == (value, type(value)), name
    for mode in split_by_auth_mode(config):
        TapAsanaVl(config=mode, validate_config=True)  # raises if the tap refuses it


def test_meltano_passes_every_setting_from_its_environment_variable_typed(tmp_path):
    expected = samples()
    env = {ENV_PREFIX + name.upper(): as_text(value) for name, value in expected.items()}
    config = _config_handed_to_the_tap(_meltano_project(tmp_path), env)
    _assert_typed_and_accepted(config, expected)


def test_meltano_config_set_stores_every_setting_typed(tmp_path):
    project = _meltano_project(tmp_path)
    expected = samples()
    commands = [["config", "set", TAP, name, as_text(value)] for name, value in expected.items()]
    _run(project, "python", str(REPO / "tests" / "meltano_batch.py"), stdin=json.dumps(commands))

    _assert_typed_and_accepted(_config_handed_to_the_tap(project), expected)
    # Sensitive settings go to .env, never into meltano.yml.
    yml, dotenv = (project / "meltano.yml").read_text(), (project / ".env").read_text()
    for name, schema in all_settings().items():
        if schema.get("secret"):
            assert expected[name] not in yml, name
            assert f"{ENV_PREFIX}{name.upper()}='{expected[name]}'" in dotenv, name
