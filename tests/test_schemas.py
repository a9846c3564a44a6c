"""Tests for the committed stream schemas and their generator.

The structural checks run everywhere. The up-to-date checks need Asana's OpenAPI
spec at the generator's default path (``../shared/asana/asana_oas.yaml``) and are
skipped without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from tap_asana_vl.client import opt_fields_for

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = REPO_ROOT / "tap_asana_vl" / "schemas"
GENERATOR_PATH = REPO_ROOT / "scripts" / "generate_schemas.py"
REF_PREFIX = "#/components/schemas/"
EXPECTED_STREAMS = {"workspaces", "users", "projects", "tasks", "stories"}
OPT_FIELDS_MAX_CHARS = 6000


def _load_generator() -> ModuleType:
    module_name = "generate_schemas"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, GENERATOR_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before execution: dataclasses look their module up in sys.modules.
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


generator = _load_generator()
STREAMS: dict[str, str] = dict(generator.STREAMS)


def _load_schema(stream: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{stream}.json").read_text(encoding="utf-8"))


def _walk(properties: dict[str, Any], prefix: str = ""):
    """Yield (dotted path, property schema) for every property, items transparent."""
    for name, prop in properties.items():
        path = f"{prefix}{name}"
        yield path, prop
        inner = prop.get("items", prop)
        if "properties" in inner:
            yield from _walk(inner["properties"], f"{path}.")


def test_stream_table_covers_expected_streams():
    assert STREAMS.keys() >= EXPECTED_STREAMS


# --------------------------------------------------------------------------------------
# Structure of the committed files (no spec needed).
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_schema_is_valid_json_schema(stream):
    schema = _load_schema(stream)
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["type"] == "object"
    assert schema["properties"]


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_schema_file_is_canonical(stream):
    """Sorted properties, 2-space indent, trailing newline, type always a list."""
    text = (SCHEMA_DIR / f"{stream}.json").read_text(encoding="utf-8")
    schema = json.loads(text)
    assert text == json.dumps(schema, indent=2) + "\n"
    for path, prop in _walk(schema["properties"]):
        assert isinstance(prop["type"], list), path
        assert "enum" not in prop, path
        assert "description" not in prop, path
        inner = prop.get("items", prop)
        if "properties" in inner:
            assert list(inner["properties"]) == sorted(inner["properties"]), path
    assert list(schema["properties"]) == sorted(schema["properties"])


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_gid_is_non_null_string(stream):
    assert _load_schema(stream)["properties"]["gid"] == {"type": ["string"]}


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_timestamps_are_date_time(stream):
    properties = _load_schema(stream)["properties"]
    for name in ("created_at", "modified_at"):
        if name in properties:
            assert properties[name]["format"] == "date-time", name
            assert "string" in properties[name]["type"], name


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_opt_fields_fit_in_a_url(stream):
    schema = _load_schema(stream)
    extras = set(generator.EXTRA_PROPERTIES.get(stream, {}))
    fields = opt_fields_for(schema, extras)
    assert len(",".join(fields)) < OPT_FIELDS_MAX_CHARS


def test_tasks_has_project_gid():
    assert _load_schema("tasks")["properties"]["project_gid"] == {"type": ["string", "null"]}


def test_tasks_nested_shapes():
    properties = _load_schema("tasks")["properties"]
    assert set(properties["assignee"]["properties"]) == {"gid", "name", "resource_type"}
    membership = properties["memberships"]["items"]["properties"]
    assert {"project", "section"} <= membership.keys()
    custom_field = properties["custom_fields"]["items"]["properties"]
    assert {"display_value", "enum_value", "number_value", "text_value"} <= custom_field.keys()


def test_stories_created_by_is_nullable():
    properties = _load_schema("stories")["properties"]
    assert "null" in properties["created_by"]["type"]
    assert properties["created_at"]["format"] == "date-time"
    assert "target" in properties


# --------------------------------------------------------------------------------------
# Against the OpenAPI spec (skipped when it is not available).
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi_spec() -> dict[str, Any]:
    path: Path = generator.DEFAULT_SPEC
    if not path.is_file():
        reason = f"Asana OpenAPI spec not found at {path}; the up-to-date checks need it"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI has ../shared: this check must run there)")
        pytest.skip(reason)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=loader)


def _top_level_properties(components: dict[str, Any], raw: dict[str, Any]) -> set[str]:
    """A deliberately simple, independent allOf/$ref merge of property names."""
    if "$ref" in raw:
        raw = components[raw["$ref"].removeprefix(REF_PREFIX)]
        return _top_level_properties(components, raw)
    names = set(raw.get("properties", {}))
    for part in raw.get("allOf", []):
        names |= _top_level_properties(components, part)
    return names


def test_committed_schemas_are_up_to_date(openapi_spec):
    results = generator.generate(openapi_spec)
    problems = generator.check(results, SCHEMA_DIR)
    assert not problems, "\n".join(
        ["schemas are stale; run scripts/generate_schemas.py", *problems]
    )


@pytest.mark.parametrize("stream", sorted(STREAMS))
def test_every_spec_property_is_in_schema(openapi_spec, stream):
    components = openapi_spec["components"]["schemas"]
    expected = _top_level_properties(components, components[STREAMS[stream]])
    assert expected, STREAMS[stream]
    missing = expected - set(_load_schema(stream)["properties"])
    assert not missing, f"{stream}: {sorted(missing)}"
