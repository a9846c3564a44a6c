"""Checks of what the tap is given (config files, environment, state, catalog).

Run before anything is written to stdout or sent to Asana. Each problem is an
``InputError`` whose message is the one line to print: what is wrong and where (file,
environment variable, stream, partition, key), so it can be fixed without a traceback.
"""

from __future__ import annotations

import difflib
import io
import json
import os
import typing as t
from contextlib import contextmanager

from singer_sdk.exceptions import ConfigValidationError
from singer_sdk.singerlib import MetadataMapping

from tap_asana_vl.sdk_adapter import PROGRESS_MARKERS
from tap_asana_vl.timestamps import parse_timestamp

if t.TYPE_CHECKING:
    import logging
    from collections.abc import Collection, Iterable, Iterator, Mapping

    from singer_sdk.streams import Stream


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
    """Name the environment variable when the SDK cannot use a setting from it.

    The SDK converts ``TAP_ASANA_VL_PAGE_SIZE=abc`` with ``int()`` and lets the bare
    ValueError out; reads ``TAP_ASANA_VL_PROJECT_GIDS=123`` as the number 123, refused
    without a word about the variable or the form wanted; and reads a boolean it does
    not recognise as false, silently. It also loads a ``.env`` file into the environment
    on the way, so the variables are checked after it ran, when they hold what it saw.
    """
    try:
        yield
    except (ValueError, ConfigValidationError) as exc:
        problem = _env_problem(config_jsonschema, prefix, os.environ) if enabled else None
        if problem:
            raise InputError(problem) from exc
        raise
    problem = _env_problem(config_jsonschema, prefix, os.environ) if enabled else None
    if problem:
        raise InputError(problem)


# The SDK's spellings of true (singer_sdk.configuration._dict_config.TRUTHY) and their
# opposites; it reads anything else as false.
ENV_TRUE = frozenset({"true", "1", "yes", "on"})
ENV_FALSE = frozenset({"false", "0", "no", "off"})


def _env_problem(
    config_jsonschema: Mapping[str, t.Any], prefix: str, environ: Mapping[str, str]
) -> str | None:
    """The first environment variable the SDK cannot convert to its setting's type."""
    for key, schema in config_jsonschema.get("properties", {}).items():
        variable = prefix + key.upper().replace("-", "_")
        if variable not in environ:
            continue
        value = environ[variable]
        what = f"Environment variable {variable} (setting {key})"
        shown = "(value hidden)" if schema.get("secret") else repr(value)
        types = _types(schema)
        if "integer" in types:
            try:
                int(value)
            except ValueError:
                return f"{what} is not an integer: {shown}."
        elif "boolean" in types:
            if value.lower() not in ENV_TRUE | ENV_FALSE:
                return f"{what} is not a boolean: {shown} (use true or false)."
        elif "array" in types and "string" in _types(schema.get("items", {})):
            try:
                parsed = json.loads(value)
            except ValueError:
                continue  # the SDK splits "a,b,c" at the commas
            if not isinstance(parsed, list) or not all(isinstance(i, str) for i in parsed):
                return f"""{what} is not a JSON list of strings: {shown} (e.g. '["123", "456"]')."""
        # Other arrays and objects must be JSON, as the SDK reads them.
        elif "array" in types or "object" in types:
            try:
                json.loads(value)
            except ValueError:
                return f"{what} is not JSON: {shown}."
    return None


def _types(schema: Mapping[str, t.Any]) -> set[str]:
    declared = schema.get("type", [])
    types = {declared} if isinstance(declared, str) else set(declared)
    for option in schema.get("anyOf", []):
        types |= _types(option)
    return types


# --- state ----------------------------------------------------------------------------

# State keys holding a timestamp, at stream, partition or progress-marker level. Every
# replication key of this tap is a date-time (modified_at or created_at).
TIMESTAMP_KEYS = ("replication_key_value", "starting_replication_value", "replication_key_signpost")
# SubtasksStream's own bookmarks: workspace gid -> timestamp.
TIMESTAMP_MAPS = ("search_bookmarks", "full_walks")
# Wrappers a Singer state comes in when copied out of an orchestrator: `meltano state
# get` prints {"singer_state": …}; {"value": …} is the other form reported (issue #11).
STATE_WRAPPERS = ("value", "singer_state")

TIMESTAMP_EXAMPLE = "e.g. 2024-01-31T00:00:00Z"


def checked_state(
    file: t.IO[str] | None, stream_names: Collection[str], logger: logging.Logger
) -> t.IO[str] | None:
    """The ``--state`` file, checked, as a file for the SDK to read.

    A Meltano-wrapped state (``{"value": {"bookmarks": …}}``) is unwrapped with an INFO
    line: read as is, it has no bookmarks and the run would silently start over.
    """
    if file is None:
        return None
    where = f"State file {_name(file)}"
    text = file.read()
    state = _parse_json(text, where)
    if isinstance(state, dict) and "bookmarks" not in state and len(state) == 1:
        ((wrapper, inner),) = state.items()
        if wrapper in STATE_WRAPPERS and isinstance(inner, dict):
            logger.info(
                "%s wraps the Singer state in %r (as Meltano stores it): using the state inside.",
                where,
                wrapper,
            )
            check_state(inner, where, stream_names, logger)
            return io.StringIO(json.dumps(inner))
    check_state(state, where, stream_names, logger)
    return io.StringIO(text)


def check_state(
    state: t.Any, where: str, stream_names: Collection[str], logger: logging.Logger
) -> None:
    """Raise ``InputError`` unless ``state`` is a Singer state this tap can resume from."""
    if not isinstance(state, dict):
        raise InputError(
            f'{where} holds {_kind(state)}, not a Singer state ({{"bookmarks": {{…}}}}, '
            "or {} to sync everything)."
        )
    if not state:
        return
    if "bookmarks" not in state:
        keys = ", ".join(repr(k) for k in state)
        raise InputError(
            f'{where} has no "bookmarks" (its keys: {keys}), so it is not a Singer state: '
            "pass the value of the tap's last STATE message, or {} to sync everything."
        )
    bookmarks = state["bookmarks"]
    if not isinstance(bookmarks, dict):
        raise InputError(
            f'{where}: "bookmarks" holds {_kind(bookmarks)}, not an object of streams.'
        )
    for stream, bookmark in bookmarks.items():
        at = f"{where}, stream {stream!r}"
        if not isinstance(bookmark, dict):
            raise InputError(f"{at}: the bookmark is {_kind(bookmark)}, not an object.")
        if stream not in stream_names:
            logger.warning(
                "%s: this tap has no such stream; its bookmark is kept as is but not used.",
                at,
            )
            continue
        _check_bookmark(bookmark, at)
        partitions = bookmark.get("partitions", [])
        if not isinstance(partitions, list):
            raise InputError(f'{at}: "partitions" holds {_kind(partitions)}, not a list.')
        for index, partition in enumerate(partitions):
            if not isinstance(partition, dict) or not isinstance(partition.get("context"), dict):
                raise InputError(
                    f'{at}, partition #{index + 1}: not an object with a "context" object.'
                )
            context = json.dumps(partition["context"], sort_keys=True, default=str)
            _check_bookmark(partition, f"{at}, partition {context}")


def _check_bookmark(bookmark: Mapping[str, t.Any], at: str) -> None:
    """The timestamps of one stream or partition bookmark parse as the streams read them."""
    for key in TIMESTAMP_KEYS:
        _check_timestamp(bookmark.get(key), f"{at}, key {key!r}")
    markers = bookmark.get(PROGRESS_MARKERS)
    if markers is not None:
        if not isinstance(markers, dict):
            raise InputError(f'{at}: "{PROGRESS_MARKERS}" holds {_kind(markers)}, not an object.')
        for key in TIMESTAMP_KEYS:
            _check_timestamp(markers.get(key), f"{at}, {PROGRESS_MARKERS} key {key!r}")
    for name in TIMESTAMP_MAPS:
        values = bookmark.get(name)
        if values is None:
            continue
        if not isinstance(values, dict):
            raise InputError(f"{at}: {name!r} holds {_kind(values)}, not an object.")
        for workspace, value in values.items():
            _check_timestamp(value, f"{at}, key {name!r}, workspace {workspace!r}")


def _check_timestamp(value: t.Any, at: str) -> None:
    if value is None:
        return
    try:
        parse_timestamp(value)
    except (TypeError, ValueError, AttributeError):
        raise InputError(
            f"{at}: {value!r} is not an ISO 8601 date-time ({TIMESTAMP_EXAMPLE})."
        ) from None


# --- catalog --------------------------------------------------------------------------


def checked_catalog(file: t.IO[str] | None, stream_names: Collection[str]) -> t.IO[str] | None:
    """The ``--catalog`` file, checked, as a file for the SDK to read."""
    if file is None:
        return None
    where = f"Catalog file {_name(file)}"
    text = file.read()
    check_catalog(_parse_json(text, where), where, stream_names)
    return io.StringIO(text)


def check_catalog(catalog: t.Any, where: str, stream_names: Collection[str]) -> None:
    """Raise ``InputError`` unless ``catalog`` is a Singer catalog of this tap's streams.

    An unknown stream that is selected is an error (a typo, or a catalog of another tap
    would otherwise sync nothing, silently); an unknown one left unselected is harmless.
    """
    if not isinstance(catalog, dict):
        raise InputError(
            f'{where} holds {_kind(catalog)}, not a Singer catalog ({{"streams": [...]}}): '
            "generate one with --discover."
        )
    if not isinstance(catalog.get("streams"), list):
        got = _kind(catalog["streams"]) if "streams" in catalog else "missing"
        raise InputError(
            f'{where}: "streams" is {got}, not a list of streams: generate a catalog '
            "with --discover."
        )
    for index, entry in enumerate(catalog["streams"]):
        at = f"{where}, streams[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("tap_stream_id"), str):
            raise InputError(f'{at}: not an object with a "tap_stream_id" string.')
        at = f"{where}, stream {entry['tap_stream_id']!r}"
        metadata = entry.get("metadata", [])
        if not isinstance(metadata, list) or not all(
            isinstance(m, dict)
            and isinstance(m.get("breadcrumb"), list)
            and isinstance(m.get("metadata"), dict)
            for m in metadata
        ):
            raise InputError(
                f'{at}: "metadata" must be a list of {{"breadcrumb": [...], "metadata": {{...}}}}.'
            )
        if not isinstance(entry.get("schema", {}), dict):
            raise InputError(f'{at}: "schema" must be a JSON Schema object.')
        stream = entry["tap_stream_id"]
        if stream not in stream_names and _selected(metadata):
            close = difflib.get_close_matches(stream, sorted(stream_names), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(
                f"{where} selects stream {stream!r}, which this tap does not have: {hint}"
                "run --discover for the list of streams."
            )


def warn_if_nothing_selected(streams: Iterable[Stream], logger: logging.Logger) -> None:
    """One warning when the catalog selects no stream (the run then syncs nothing)."""
    if not any(stream.selected for stream in streams):
        logger.warning(
            'The catalog selects no stream, so nothing will be synced: set "selected": '
            "true in a stream's top-level metadata (or `meltano select`)."
        )


def _selected(metadata: list[dict[str, t.Any]]) -> bool:
    """Whether a catalog entry's metadata selects the stream, decided as the SDK does."""
    return MetadataMapping.from_iterable(metadata).resolve_selection().get((), True)


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


def _name(file: t.IO[str]) -> str:
    return str(getattr(file, "name", "<input>"))


def _reason(exc: BaseException) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
