"""Checks of what the tap is given (config files, environment).

Run before anything is written to stdout or sent to Asana. Each problem is an
``InputError`` whose message is the one line to print: what is wrong and where (file,
environment variable), so it can be fixed without a traceback.
"""

from __future__ import annotations

import json
import os
import typing as t
from contextlib import contextmanager

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping


class InputError(Exception):
    """An input the tap cannot use; the message is one line saying what and where."""


# --- config files and environment -----------------------------------------------------


def check_config_files(paths: Iterable[str]) -> None:
    """Each ``--config`` file (``ENV`` aside) exists and holds one JSON object.

    The SDK reads them afterwards; without this a typo is a bare JSONDecodeError (no file
    named) and a file holding ``[1, 2]`` a TypeError.
    """
    for path in paths:
        if path == "ENV":
            continue
        what = f"Config file {path}"
        try:
            with open(path, encoding="utf-8") as file:
                text = file.read()
        except FileNotFoundError:
            raise InputError(f"{what} does not exist.") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"{what} cannot be read: {_reason(exc)}.") from None
        value = _parse_json(text, what)
        if not isinstance(value, dict):
            raise InputError(
                f"{what} holds {_kind(value)}, not an object of settings "
                '(e.g. {"access_token": "…"}).'
            )


@contextmanager
def env_settings_named(
    config_jsonschema: Mapping[str, t.Any], prefix: str, *, enabled: bool
) -> Iterator[None]:
    """Name the setting when the SDK cannot parse one from an environment variable.

    The SDK converts ``TAP_ASANA_VL_PAGE_SIZE=abc`` with ``int()`` and lets the bare
    ValueError out. It also loads a ``.env`` file into the environment on the way, so the
    variables are checked after it failed, when they hold what the SDK saw.
    """
    try:
        yield
    except ValueError as exc:
        problem = _env_problem(config_jsonschema, prefix, os.environ) if enabled else None
        if problem:
            raise InputError(problem) from exc
        raise


def _env_problem(
    config_jsonschema: Mapping[str, t.Any], prefix: str, environ: Mapping[str, str]
) -> str | None:
    """The first environment variable the SDK cannot convert to its setting's type."""
    for key, schema in config_jsonschema.get("properties", {}).items():
        variable = prefix + key.upper().replace("-", "_")
        if variable not in environ:
            continue
        value = environ[variable]
        shown = "(value hidden)" if schema.get("secret") else repr(value)
        types = _types(schema)
        if "integer" in types:
            try:
                int(value)
            except ValueError:
                return (
                    f"Environment variable {variable} (setting {key}) is not an integer: {shown}."
                )
        # Mirrors the SDK: arrays of strings fall back to "a,b,c"; other arrays and
        # objects must be JSON.
        elif ("array" in types and "string" not in _types(schema.get("items", {}))) or (
            "object" in types
        ):
            try:
                json.loads(value)
            except ValueError:
                return f"Environment variable {variable} (setting {key}) is not JSON: {shown}."
    return None


def _types(schema: Mapping[str, t.Any]) -> set[str]:
    declared = schema.get("type", [])
    types = {declared} if isinstance(declared, str) else set(declared)
    for option in schema.get("anyOf", []):
        types |= _types(option)
    return types


# --- shared ---------------------------------------------------------------------------


def _parse_json(text: str, what: str) -> t.Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # The decoder's message names no content: nothing secret is printed.
        raise InputError(
            f"{what} is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from None


def _kind(value: t.Any) -> str:
    """A JSON value's type, for messages: 'a list', 'a string', 'null'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
