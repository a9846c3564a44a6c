"""Tests for the committed stream schemas and their generator.

Asana's OpenAPI spec is vendored under ``spec/`` (with its hash), so the up-to-date and
"what the endpoint documents" checks run everywhere, CI included.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
import yaml

from tap_asana_vl.streams.paging import opt_fields_for
from tap_asana_vl.tap import STREAM_TYPES, TapAsanaVl

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


def _nodes(schema: dict[str, Any], path: str = ""):
    """Yield (path, node) for every property and every array's items, at any depth."""
    for name, prop in schema.get("properties", {}).items():
        yield f"{path}{name}", prop
        yield from _nodes(prop, f"{path}{name}.")
        if "items" in prop:
            yield f"{path}{name}[]", prop["items"]
            yield from _nodes(prop["items"], f"{path}{name}[].")


@pytest.mark.parametrize("stream_type", STREAM_TYPES, ids=lambda s: s.name)
def test_every_non_key_value_may_be_null(stream_type):
    """Asana sends null where its spec does not say so; only the key is guaranteed."""
    schema = _load_schema(stream_type.name)
    keys = set(stream_type.primary_keys)
    strict = [
        path
        for path, node in _nodes(schema)
        if path not in keys and "null" not in node.get("type", ["null"])
    ]
    assert not strict, f"{stream_type.name}: not nullable: {strict}"
    for key in keys:
        assert "null" not in schema["properties"][key]["type"], key


def test_types_stay_precise():
    tasks = _load_schema("tasks")["properties"]
    assert tasks["num_likes"]["type"] == ["integer", "null"]
    assert tasks["custom_fields"]["items"]["properties"]["precision"]["type"] == [
        "integer",
        "null",
    ]
    assert tasks["modified_at"] == {"type": ["string", "null"], "format": "date-time"}
    assert tasks["due_on"] == {"type": ["string", "null"], "format": "date"}


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
# Against the OpenAPI spec (vendored in spec/).
# --------------------------------------------------------------------------------------


def test_vendored_spec_is_the_documented_one():
    readme = (REPO_ROOT / "spec" / "README.md").read_text(encoding="utf-8")
    documented = re.search(r"SHA-256: `([0-9a-f]{64})`", readme)
    assert documented, "spec/README.md must state the spec's SHA-256"
    digest = hashlib.sha256(generator.DEFAULT_SPEC.read_bytes()).hexdigest()
    assert digest == documented.group(1)


@pytest.fixture(scope="module")
def openapi_spec() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with generator.DEFAULT_SPEC.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=loader)


def test_committed_schemas_are_up_to_date(openapi_spec):
    results = generator.generate(openapi_spec)
    problems = generator.check(results, SCHEMA_DIR)
    assert not problems, "\n".join(
        ["schemas are stale; run scripts/generate_schemas.py", *problems]
    )


def _documented(spec: dict[str, Any], endpoint: str) -> set[str]:
    """An independent read of an operation's documented ``opt_fields`` values."""
    for parameter in spec["paths"][endpoint]["get"]["parameters"]:
        if parameter.get("name") == "opt_fields":
            return set(parameter["schema"]["items"]["enum"]) - {"offset", "path", "uri"}
    raise AssertionError(f"{endpoint} documents no opt_fields")


@pytest.mark.parametrize(
    "stream_type",
    [s for s in STREAM_TYPES if s.name in generator.ENDPOINTS],
    ids=lambda s: s.name,
)
def test_streams_ask_only_for_what_their_endpoint_returns(openapi_spec, stream_type):
    """A field the endpoint does not document would be requested in vain, forever null.

    Checked on what the tap really sends (the stream's ``opt_fields``), against the
    endpoint the stream calls: every requested path is documented, is a compact's
    ``gid``/``resource_type``, or lies inside an object the endpoint returns whole.
    """
    endpoint = generator.ENDPOINTS[stream_type.name]
    assert endpoint.split("?")[0] == stream_type.path or stream_type.name in {
        "subtasks",  # also read through search, which documents the same fields
        "portfolio_items",
    }, f"{stream_type.name} calls {stream_type.path}, generated from {endpoint}"
    documented = _documented(openapi_spec, endpoint)
    tap = TapAsanaVl(config={"access_token": "x"}, parse_env_config=False)
    stream = tap.streams[stream_type.name]
    undocumented = []
    for path in stream.opt_fields.split(","):
        parent, _, leaf = path.rpartition(".")
        whole = parent and not any(d.startswith(parent + ".") for d in documented)
        if path in documented or leaf in {"gid", "resource_type"} or whole:
            continue
        undocumented.append(path)
    assert not undocumented, f"{stream_type.name} asks {endpoint} for {undocumented}"
