"""Write secrets into a ``.env`` file safely; python-dotenv reads and parses it.

python-dotenv (the reader the Singer SDK and Meltano use) finds the file's bindings
(``dotenv.parser.parse_stream``, on which its ``dotenv_values`` and ``set_key`` are
built).  A binding of a key we set is rewritten as ``KEY=value``; every other byte
stays as it was.  ``set_key`` itself is not used: it rewrites the file once per key,
turns every CRLF into LF and drops the blank lines before the key.

What python-dotenv does not do, and this module adds, is what a file of secrets needs:

- the file is mode 0600 from the first byte (never widened, an existing one tightened);
- a file owned by another user is refused (root must not hand its secrets to whoever
  owns, or planted, the file);
- concurrent writers take turns (a lock on ``<name>.lock``), so none loses an update;
- all changes land at once: they are made on a private copy, checked by reading it
  back, and moved over the file with ``os.replace``;
- values are written minimally quoted, readable by python-dotenv and a POSIX shell;
- a setting can be commented out in place (``# KEY=value``).

No error message contains a value.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import stat
import tempfile
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv.parser import parse_stream

try:
    import fcntl
except ImportError:  # Windows: no flock; writes stay atomic, just not serialised
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "EnvFileUpdate",
    "NotOwnerError",
    "check_owner",
    "format_value",
    "read_env_file",
    "update_env_file",
]

SECRET_FILE_MODE = 0o600
# How long to wait for another writer of the same file before giving up.
LOCK_TIMEOUT_SECONDS = 30.0

_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Characters that need no quoting for python-dotenv *and* for a POSIX shell that
# sources the file (`set -a; . ./.env`).  Everything else gets single quotes.
_SAFE_VALUE_RE = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")
_EXPORT_RE = re.compile(r"export[^\S\r\n]+")
_LINE_END_RE = re.compile(r"(?:\r\n|\n|\r)?\Z")
_NEWLINE_RE = re.compile(r"\r\n|\n|\r")


class NotOwnerError(PermissionError):
    """The dotenv file belongs to another user; secrets are not written into it."""


@dataclass(frozen=True)
class EnvFileUpdate:
    """What :func:`update_env_file` did."""

    path: Path
    created: bool
    previous_mode: int | None = None
    updated: list[str] = field(default_factory=list)
    appended: list[str] = field(default_factory=list)
    commented_out: list[str] = field(default_factory=list)


def _bindings(data: bytes) -> dict[str, str | None]:
    """Every key of a dotenv text as python-dotenv reads it (None: a bare ``KEY``).

    What ``dotenv_values(stream=..., interpolate=False)`` returns, without its warning
    about each malformed line, which would repeat for every read of one run.  No
    ``${VAR}`` expansion: we compare what is written, not what a reader makes of it.
    """
    text = data.decode("utf-8", "surrogateescape")
    return {b.key: b.value for b in parse_stream(io.StringIO(text)) if b.key is not None}


def read_env_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``KEY -> value`` settings of a dotenv file; a missing file reads as empty.

    Read as python-dotenv reads it, without ``${VAR}`` expansion; a bare ``KEY`` line
    sets nothing.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return {}
    return {key: value for key, value in _bindings(data).items() if value is not None}


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
    comment_out: Collection[str] = (),
    lock_timeout: float = LOCK_TIMEOUT_SECONDS,
) -> EnvFileUpdate:
    """Set ``values`` (and comment out the ``comment_out`` keys) in a dotenv file.

    A missing file is created; otherwise only the bindings of these keys change (see
    :func:`_edit`).  The new content goes to a temporary file created with mode 0600 in
    the same directory, which then replaces the old one (:func:`os.replace`), so the
    file is never partially written nor readable by others, even briefly.  A symlinked
    ``.env`` stays a symlink: its target is the file rewritten.

    Raises:
        NotOwnerError: the file belongs to another user.
        TimeoutError: another writer held the lock for ``lock_timeout`` seconds.
        OSError: the file or its directory cannot be read or written.
        ValueError: a key or value cannot be written, or the result would not read
            back as intended (e.g. a malformed line with an unterminated quote swallows
            the appended lines); the file is then left as it was.

    """
    for key in [*values, *comment_out]:
        if not _KEY_RE.fullmatch(key):
            msg = f"invalid variable name: {key!r}"
            raise ValueError(msg)
    rendered = {key: format_value(value) for key, value in values.items()}
    target = Path(os.path.realpath(path))
    with _locked(target, lock_timeout):
        return _rewrite(target, values, rendered, comment_out)


def _rewrite(
    target: Path,
    values: Mapping[str, str],
    rendered: Mapping[str, str],
    comment_out: Collection[str],
) -> EnvFileUpdate:
    """The read-modify-replace of :func:`update_env_file`; the caller holds the lock."""
    try:
        old_stat: os.stat_result | None = target.stat()
        _check_owner(target, old_stat)
        data = target.read_bytes()
    except FileNotFoundError:
        old_stat, data = None, b""
    before = _bindings(data)
    active = [key for key in comment_out if before.get(key)]
    text = _edit(data.decode("utf-8", "surrogateescape"), rendered, active)
    new_data = text.encode("utf-8", "surrogateescape")
    _check_result(target, before, _bindings(new_data), values, active)

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
        updated=[key for key in values if key in before],
        appended=[key for key in values if key not in before],
        commented_out=active,
    )


def _edit(text: str, rendered: Mapping[str, str], comment_out: Collection[str]) -> str:
    """``text`` with the ``rendered`` values set and the ``comment_out`` keys commented.

    Each binding python-dotenv finds is a statement with the blank lines before it and
    its line ending.  One of a key to set becomes ``[export ]KEY=value`` (an inline
    comment on it is not kept); one to comment out gets ``# `` before each of its lines;
    anything else stays as it is.  Keys not found are appended.
    """
    parts = ["\ufeff"] if text.startswith("\ufeff") else []  # the parser drops a BOM
    found: set[str] = set()
    for binding in parse_stream(io.StringIO(text)):
        original, key = binding.original.string, binding.key
        statement = original.lstrip()
        lead = original[: len(original) - len(statement)]
        if key is not None and key in rendered:
            export = "export " if _EXPORT_RE.match(statement) else ""
            line_end = _LINE_END_RE.search(statement).group(0)  # type: ignore[union-attr]
            parts.append(f"{lead}{export}{key}={rendered[key]}{line_end}")
            found.add(key)
        elif key is not None and key in comment_out and binding.value:
            parts.append(lead + re.sub(r"(?m)^(?=.)", "# ", statement))
        else:
            parts.append(original)
    text = "".join(parts)
    missing = [key for key in rendered if key not in found]
    if missing:
        match = _NEWLINE_RE.search(text)
        newline = match.group(0) if match else "\n"
        if text and not text.endswith(("\n", "\r")):
            text += newline
        text += "".join(f"{key}={rendered[key]}{newline}" for key in missing)
    return text


def _check_result(
    target: Path,
    before: Mapping[str, str | None],
    after: Mapping[str, str | None],
    values: Mapping[str, str],
    commented_out: Collection[str],
) -> None:
    """Refuse an edit that does not read back as intended (names our keys, never values)."""
    expected = {k: v for k, v in before.items() if k not in commented_out} | dict(values)
    if after != expected:
        ours = [key for key in [*values, *commented_out] if after.get(key) != expected.get(key)]
        msg = (
            f"{', '.join(ours) or 'other settings'} would not read back correctly from the "
            f"updated {target} (is there a malformed line, e.g. an unterminated quote, or "
            "a value on several lines?); the file was left as it was"
        )
        raise ValueError(msg)


def _fsync_directory(directory: Path) -> None:
    """Best-effort fsync of a directory so a rename survives a crash."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
