"""Read and update ``.env`` files without disturbing what is already in them.

The grammar follows python-dotenv (which the Singer SDK and Meltano use to load
``.env`` files): optional ``export`` prefix, ``KEY=value`` with unquoted,
``'single'`` or ``"double"`` quoted values, ``#`` comments.  Updates replace only
the value of a matching binding, so every other byte of the file (comments,
blank lines, ordering, line endings, the ``export`` form, inline comments) stays
exactly as it was.  Writes are atomic and the file is kept at mode 0600 because
it holds secrets.  A file that belongs to another user is never written (root
must not hand its secrets to whoever owns, or planted, the file), and the
read-modify-write holds an exclusive lock, so concurrent writers lose nothing.

Only the standard library is used: this module is imported by the
``tap-asana-vl-auth`` command.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; writes stay atomic, just not serialised
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "EnvFileUpdate",
    "NotOwnerError",
    "check_owner",
    "format_value",
    "parse_env_text",
    "read_env_file",
    "update_env_file",
    "update_env_text",
]

SECRET_FILE_MODE = 0o600
# How long to wait for another writer of the same file before giving up.
LOCK_TIMEOUT_SECONDS = 30.0

_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters that need no quoting for python-dotenv *and* for a POSIX shell that
# sources the file (`set -a; . ./.env`).  Everything else gets single quotes.
_SAFE_VALUE_RE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")

# Tokens of the python-dotenv grammar (dotenv/parser.py), anchored with .match(pos).
_MULTILINE_WS = re.compile(r"\s*", re.MULTILINE)
_EXPORT = re.compile(r"(?:export[^\S\r\n]+)?")
_SINGLE_QUOTED_KEY = re.compile(r"'([^']+)'")
_UNQUOTED_KEY = re.compile(r"([^=\#\s]+)")
_WS = re.compile(r"[^\S\r\n]*")
_EQUAL_SIGN = re.compile(r"=[^\S\r\n]*")
_SINGLE_QUOTED_VALUE = re.compile(r"'((?:\\.|[^'\\])*)'", re.DOTALL)
_DOUBLE_QUOTED_VALUE = re.compile(r'"((?:\\.|[^"\\])*)"', re.DOTALL)
_UNQUOTED_VALUE = re.compile(r"[^\r\n]*")
_INLINE_COMMENT = re.compile(r"\s+#.*")
_COMMENT = re.compile(r"(?:[^\S\r\n]*#[^\r\n]*)?")
_END_OF_LINE = re.compile(r"[^\S\r\n]*(?:\r\n|\n|\r|$)")
_REST_OF_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)?")
_NEWLINE = re.compile(r"\r\n|\n|\r")

_SINGLE_QUOTE_ESCAPES = re.compile(r"\\[\\']")
_DOUBLE_QUOTE_ESCAPES = re.compile(r"\\[\\'\"abfnrtv]")
_ESCAPED_CHARS = {
    "\\": "\\",
    "'": "'",
    '"': '"',
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
}


class _ParseError(Exception):
    """Raised inside the scanner when a line is not a valid binding."""


@dataclass(frozen=True)
class _Binding:
    """One ``KEY=value`` binding found in a dotenv text.

    ``value_start``/``value_end`` delimit the characters to replace to change the
    value (quotes included, inline comment and line ending excluded).
    """

    key: str
    value: str | None
    value_start: int
    value_end: int
    needs_equal_sign: bool = False
    needs_space_after: bool = False


def _match(regex: re.Pattern[str], text: str, pos: int) -> re.Match[str]:
    """Match ``regex`` at ``pos`` or raise :class:`_ParseError`."""
    match = regex.match(text, pos)
    if match is None:
        raise _ParseError
    return match


def _decode(escapes: re.Pattern[str], raw: str) -> str:
    """Decode backslash escapes the way python-dotenv does."""
    return escapes.sub(lambda m: _ESCAPED_CHARS[m.group(0)[1]], raw)


def _scan_value(text: str, pos: int) -> tuple[str, int, int]:
    """Read a value starting at ``pos``; return (decoded value, span start, span end)."""
    char = text[pos : pos + 1]
    if char == "'":
        match = _match(_SINGLE_QUOTED_VALUE, text, pos)
        return _decode(_SINGLE_QUOTE_ESCAPES, match.group(1)), pos, match.end()
    if char == '"':
        match = _match(_DOUBLE_QUOTED_VALUE, text, pos)
        return _decode(_DOUBLE_QUOTE_ESCAPES, match.group(1)), pos, match.end()
    if char in ("", "\n", "\r"):
        return "", pos, pos
    raw = _match(_UNQUOTED_VALUE, text, pos).group(0)
    value = _INLINE_COMMENT.sub("", raw).rstrip()
    # The value occupies the first len(value) characters of raw; what follows
    # (trailing blanks, inline comment) stays untouched on update.
    return value, pos, pos + len(value)


def _scan(text: str) -> Iterator[_Binding]:
    """Yield the bindings of a dotenv text, mirroring python-dotenv's parser."""
    pos = 1 if text.startswith("\ufeff") else 0
    length = len(text)
    while pos < length:
        pos = _MULTILINE_WS.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= length:
            return
        binding: _Binding | None = None
        try:
            pos = _EXPORT.match(text, pos).end()  # type: ignore[union-attr]
            key: str | None
            if text.startswith("#", pos):
                key = None
            else:
                key_re = _SINGLE_QUOTED_KEY if text.startswith("'", pos) else _UNQUOTED_KEY
                key_match = _match(key_re, text, pos)
                key = key_match.group(1)
                pos = key_match.end()
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            if key is not None and text.startswith("=", pos):
                equal_sign = _match(_EQUAL_SIGN, text, pos)
                pos = equal_sign.end()
                if len(equal_sign.group(0)) > 1 and text.startswith("#", pos):
                    # `KEY= # comment`: empty value, the rest is a comment.
                    binding = _Binding(key, "", pos, pos, needs_space_after=True)
                else:
                    value, start, end = _scan_value(text, pos)
                    binding = _Binding(key, value, start, end)
                    if text[start : start + 1] in ("'", '"'):
                        pos = end
                    else:  # unquoted: the rest of the line is value + comment
                        pos = _UNQUOTED_VALUE.match(text, pos).end()  # type: ignore[union-attr]
            elif key is not None:
                # A bare `KEY` line (python-dotenv: value None): insert `=value`
                # right after the key.
                key_end = len(text[:pos].rstrip(" \t\f\v"))
                binding = _Binding(key, None, key_end, key_end, needs_equal_sign=True)
            pos = _match(_COMMENT, text, pos).end()
            pos = _match(_END_OF_LINE, text, pos).end()
        except _ParseError:
            pos = _REST_OF_LINE.match(text, pos).end()  # type: ignore[union-attr]
            continue
        if binding is not None:
            yield binding


def parse_env_text(text: str) -> dict[str, str]:
    """Return the ``KEY -> value`` mapping of a dotenv text (last binding wins).

    A bare ``KEY`` line (no ``=``) unsets the key, as python-dotenv's loaders do.
    Variable interpolation (``${VAR}``) is not performed.
    """
    result: dict[str, str] = {}
    for binding in _scan(text):
        if binding.value is None:
            result.pop(binding.key, None)
        else:
            result[binding.key] = binding.value
    return result


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """Parse a dotenv file; a missing file reads as empty."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return {}
    return parse_env_text(data.decode("utf-8", "surrogateescape"))


def format_value(value: str) -> str:
    """Render ``value`` for a dotenv file, single-quoting it when needed.

    Plain values (letters, digits and ``_@%+=:,./-``) are written as they are;
    anything else is written in single quotes, which python-dotenv and POSIX
    shells both read literally (no ``$`` interpolation).  A backslash or single
    quote inside is escaped the python-dotenv way.

    Raises:
        ValueError: the value holds a line break or another control character,
            or ``${`` (python-dotenv expands ``${VAR}`` even in single quotes,
            so such a value could not be read back as written).

    """
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value):
        msg = "refusing to write a value that contains a line break or control character"
        raise ValueError(msg)
    if "${" in value:
        msg = "refusing to write a value that contains '${' (dotenv readers would expand it)"
        raise ValueError(msg)
    if _SAFE_VALUE_RE.fullmatch(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _newline_of(text: str) -> str:
    """Return the line ending the text already uses (LF by default)."""
    match = _NEWLINE.search(text)
    return match.group(0) if match else "\n"


def update_env_text(text: str, values: Mapping[str, str]) -> tuple[str, list[str], list[str]]:
    """Set ``values`` in a dotenv text.

    Every binding of a key in ``values`` (``KEY=...`` or ``export KEY=...``) gets
    its value replaced in place; keys not present are appended at the end, one
    ``KEY=value`` line each.  All other characters are kept as they are.

    Returns:
        The new text, the keys updated in place and the keys appended.

    Raises:
        ValueError: a key is not a valid variable name, a value cannot be written,
            or the result would not read back as intended (e.g. a malformed line
            with an unterminated quote swallows the appended lines).

    """
    for key in values:
        if not _KEY_RE.fullmatch(key):
            msg = f"invalid variable name: {key!r}"
            raise ValueError(msg)
    rendered = {key: format_value(value) for key, value in values.items()}

    edits: list[tuple[int, int, str]] = []
    updated: list[str] = []
    for binding in _scan(text):
        if binding.key not in rendered:
            continue
        new = rendered[binding.key]
        if binding.needs_equal_sign:
            new = "=" + new
        if binding.needs_space_after:
            new += " "
        edits.append((binding.value_start, binding.value_end, new))
        if binding.key not in updated:
            updated.append(binding.key)

    for start, end, new in reversed(edits):
        text = text[:start] + new + text[end:]

    appended = [key for key in rendered if key not in updated]
    if appended:
        newline = _newline_of(text)
        if text and not text.endswith(("\n", "\r")):
            text += newline
        text += "".join(f"{key}={rendered[key]}{newline}" for key in appended)

    parsed = parse_env_text(text)
    unreadable = [key for key, value in values.items() if parsed.get(key) != value]
    if unreadable:
        msg = (
            f"{', '.join(unreadable)} would not read back correctly from the updated file "
            "(is there a malformed line, e.g. an unterminated quote?)"
        )
        raise ValueError(msg)
    return text, updated, appended


@dataclass(frozen=True)
class EnvFileUpdate:
    """What :func:`update_env_file` did."""

    path: Path
    created: bool
    previous_mode: int | None = None
    updated: list[str] = field(default_factory=list)
    appended: list[str] = field(default_factory=list)


def _fsync_directory(directory: Path) -> None:
    """Best-effort fsync of a directory so a rename survives a crash."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class NotOwnerError(PermissionError):
    """The dotenv file belongs to another user; secrets are not written into it."""


def _check_owner(target: Path, file_stat: os.stat_result) -> None:
    if hasattr(os, "geteuid") and file_stat.st_uid != os.geteuid():
        msg = (
            f"{target} belongs to another user (uid {file_stat.st_uid}; you are uid "
            f"{os.geteuid()}): refusing to write secrets into another user's file. Run "
            "as that user, or use a file of your own"
        )
        raise NotOwnerError(msg)


def check_owner(path: str | os.PathLike[str]) -> None:
    """Raise :class:`NotOwnerError` if the (symlink-resolved) file belongs to another user.

    A missing file is fine: it would be created, owned by the caller.
    """
    target = Path(os.path.realpath(path))
    try:
        file_stat = target.stat()
    except FileNotFoundError:
        return
    _check_owner(target, file_stat)


@contextlib.contextmanager
def _locked(target: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock on ``target``'s sibling lock file ``<name>.lock``.

    A separate file, because the dotenv file itself is replaced (a lock on the old
    inode would not stop the next writer).  The lock file is left in place: deleting
    it would let two writers lock two different files.  It is opened without
    following symlinks, so a planted link cannot make us create or truncate a file
    elsewhere.
    """
    if fcntl is None:
        yield
        return
    lock_path = target.with_name(f"{target.name}.lock")
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(lock_path, flags, SECRET_FILE_MODE)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    msg = (
                        f"another program has been writing {target} for {timeout:g} s "
                        f"(it holds {lock_path}); try again when it is done"
                    )
                    raise TimeoutError(msg) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock


def update_env_file(
    path: str | os.PathLike[str],
    values: Mapping[str, str],
    *,
    lock_timeout: float = LOCK_TIMEOUT_SECONDS,
) -> EnvFileUpdate:
    """Set ``values`` in the dotenv file at ``path`` atomically, with mode 0600.

    A missing file is created.  An existing one is rewritten with only the
    matching values changed (see :func:`update_env_text`), byte for byte
    otherwise.  The new content is written to a temporary file created with mode
    0600 in the same directory and moved over the old file with
    :func:`os.replace`, so the file is never partially written and never
    readable by others, even briefly.  A symlinked ``.env`` stays a symlink: its
    target is the file rewritten.  Reading and replacing happen under an exclusive
    lock (see :func:`_locked`), so a concurrent writer's update is never lost.

    Raises:
        NotOwnerError: the file belongs to another user.
        TimeoutError: another writer held the lock for ``lock_timeout`` seconds.
        OSError: the file or its directory cannot be read or written.
        ValueError: a key or value cannot be written (see :func:`update_env_text`).

    """
    target = Path(os.path.realpath(path))
    with _locked(target, lock_timeout):
        return _rewrite(target, values)


def _rewrite(target: Path, values: Mapping[str, str]) -> EnvFileUpdate:
    """The read-modify-write of :func:`update_env_file`; the caller holds the lock."""
    try:
        old_stat: os.stat_result | None = target.stat()
        _check_owner(target, old_stat)
        data = target.read_bytes()
    except FileNotFoundError:
        old_stat = None
        data = b""
    text, updated, appended = update_env_text(data.decode("utf-8", "surrogateescape"), values)
    new_data = text.encode("utf-8", "surrogateescape")

    # mkstemp creates the file with mode 0600 (O_EXCL), so it is private from birth.
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            with contextlib.suppress(OSError, NotImplementedError):
                os.chmod(tmp_name, SECRET_FILE_MODE)
            if old_stat is not None and hasattr(os, "chown"):
                # Keep the group (the owner is us: _check_owner made sure).
                with contextlib.suppress(OSError):
                    os.chown(tmp_name, -1, old_stat.st_gid)
            handle.write(new_data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_directory(target.parent)
    return EnvFileUpdate(
        path=target,
        created=old_stat is None,
        previous_mode=stat.S_IMODE(old_stat.st_mode) if old_stat is not None else None,
        updated=updated,
        appended=appended,
    )
