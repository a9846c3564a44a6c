"""A valid, non-default value for every setting the tap accepts, typed and as text.

Used to check that each setting reaches the tap with the right JSON type, whichever way
it is given: ``--config ENV`` (tests/test_inputs.py) or Meltano's ``config set`` and
environment variables (tests/test_meltano_settings.py). A setting of a type this module
does not know fails the tests, so a new setting cannot go unchecked.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from tap_asana_vl.settings import OAUTH_SETTINGS
from tap_asana_vl.tap import TapAsanaVl

# Values the generic rules below would get wrong: objects have no generic valid value,
# and flattened keys cut to 1 character collide.
NAMED_SAMPLES: dict[str, Any] = {
    "stream_maps": {"users": {"__alias__": "people"}},
    "stream_map_config": {"region": "eu"},
    "faker_config": {"seed": 42, "locale": "en_US"},
    "flattening_max_key_length": 255,
    "flattening_separator": "__",
}


def all_settings() -> dict[str, dict[str, Any]]:
    """Every setting the tap accepts (its own and the SDK's built-ins), by name.

    What ``tap-asana-vl --about`` lists. Computed on a copy: the SDK appends its
    built-ins to the class's schema in place when it reads the environment.
    """
    schema = copy.deepcopy(TapAsanaVl.config_jsonschema)
    TapAsanaVl.append_builtin_config(schema)
    return schema["properties"]


def json_types(schema: dict[str, Any]) -> set[str]:
    """The JSON types a setting's schema allows, null aside."""
    declared = schema.get("type", [])
    types = {declared} if isinstance(declared, str) else set(declared)
    return types - {"null"}


def sample_value(name: str, schema: dict[str, Any]) -> Any:
    """A valid value of the setting, different from its default."""
    if name in NAMED_SAMPLES:
        return NAMED_SAMPLES[name]
    types = json_types(schema)
    default = schema.get("default")
    if types == {"boolean"}:
        return not default
    if types in ({"integer"}, {"number"}):
        low = schema.get("minimum", 0)
        high = schema.get("maximum", low + 1000)
        value = next(v for v in range(low + 1, high + 1) if v != default)
        # A fraction proves a number setting is not read as an integer.
        return value + 0.5 if types == {"number"} and value + 0.5 <= high else value
    if types == {"array"} and json_types(schema.get("items", {})) == {"string"}:
        return ["1200000000000001", "1200000000000002"]
    if types == {"string"} and schema.get("format") == "date-time":
        return "2024-01-31T00:00:00+00:00"
    if types == {"string"} and name.endswith("_url"):
        return f"https://asana-proxy.example.com/{name}"
    if types == {"string"}:
        # Dummy values only, and no spaces (tokens with spaces are refused).
        return f"dummy-{name.replace('_', '-')}"
    msg = f"No sample value for setting {name} of type {sorted(types)}: add one here."
    raise AssertionError(msg)


def as_text(value: Any) -> str:
    """The value as one would type it in an environment variable or on a command line."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def samples() -> dict[str, Any]:
    """A sample value for every setting, by name."""
    return {name: sample_value(name, schema) for name, schema in all_settings().items()}


def split_by_auth_mode(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The config as two the tap accepts: without the OAuth settings, and without the PAT.

    The authentication modes exclude each other, so no one config can hold every setting.
    """
    pat = {k: v for k, v in config.items() if k not in OAUTH_SETTINGS}
    oauth = {k: v for k, v in config.items() if k != "access_token"}
    return [pat, oauth]


def sample_configs() -> list[dict[str, Any]]:
    """Two configs, together giving every setting a sample value: PAT mode and OAuth mode."""
    return split_by_auth_mode(samples())
