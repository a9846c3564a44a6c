"""Tests for ``tap_asana_vl.oauth.env_file``: how ``tap-asana-vl-auth`` writes ``.env``.

python-dotenv parses; these tests hold the module to what it adds: values that read back
identically (with python-dotenv, as the SDK and Meltano read them), untouched other
lines, mode 0600, the lock, the owner check and the all-or-nothing replace.
"""

from __future__ import annotations

import fcntl
import io
import os
import stat
import threading
import time
from pathlib import Path

import dotenv
import pytest

from tap_asana_vl.oauth import env_file as env_file_module
from tap_asana_vl.oauth.common import (
    ENV_ACCESS_TOKEN,
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    ENV_REFRESH_TOKEN,
)
from tap_asana_vl.oauth.env_file import format_value, read_env_file, update_env_file


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def update_text(tmp_path: Path, text: str, values: dict[str, str], **kwargs):
    """Write ``text`` to a file, update it; return (new text, what was done)."""
    path = tmp_path / ".env"
    path.write_bytes(text.encode())
    result = update_env_file(path, values, **kwargs)
    return path.read_bytes().decode(), result


def test_update_keeps_everything_else(tmp_path):
    original = (
        "\ufeff# comment with TAP_ASANA_VL_REFRESH_TOKEN=not-this\r\n"
        "export TAP_ASANA_VL_REFRESH_TOKEN=old-token   # inline comment\r\n"
        "  OTHER = 'a b'  \r\n"
        "\r\n"
        'TAP_ASANA_VL_CLIENT_ID="quoted # not a comment"\r\n'
        "TAP_ASANA_VL_REFRESH_TOKEN='second'\r\n"
        "LAST=x"
    )
    text, result = update_text(
        tmp_path,
        original,
        {ENV_REFRESH_TOKEN: "1/new:token", ENV_CLIENT_ID: "42", ENV_CLIENT_SECRET: "s e$c"},
    )
    # The BOM, CRLF endings, blank lines, other lines, `export`: all kept.  Only the
    # bindings of the keys set are rewritten (an inline comment on one is not kept).
    assert text == (
        "\ufeff# comment with TAP_ASANA_VL_REFRESH_TOKEN=not-this\r\n"
        "export TAP_ASANA_VL_REFRESH_TOKEN=1/new:token\r\n"
        "  OTHER = 'a b'  \r\n"
        "\r\n"
        "TAP_ASANA_VL_CLIENT_ID=42\r\n"
        "TAP_ASANA_VL_REFRESH_TOKEN=1/new:token\r\n"
        "LAST=x\r\n"
        "TAP_ASANA_VL_CLIENT_SECRET='s e$c'\r\n"
    )
    assert result.updated == [ENV_REFRESH_TOKEN, ENV_CLIENT_ID]
    assert result.appended == [ENV_CLIENT_SECRET]


@pytest.mark.parametrize(
    "line",
    [
        "KEY=",
        "KEY= # only a comment",
        "KEY",
        "export KEY='multi\nline'",
        'KEY="esc \\" quote"',
    ],
)
def test_update_edge_bindings(tmp_path, line):
    text, result = update_text(tmp_path, f"A=1\n{line}\nB=2\n", {"KEY": "v v"})
    assert result.updated == ["KEY"]
    assert read_env_file(tmp_path / ".env") == {"A": "1", "KEY": "v v", "B": "2"}
    assert dotenv.dotenv_values(stream=io.StringIO(text)) == {"A": "1", "KEY": "v v", "B": "2"}


@pytest.mark.parametrize(
    "value",
    [
        "1/1204:abcDEF012",
        "",
        "with space",
        "hash # x",
        "dollar $x and $HOME",
        "it's",
        "back\\slash",
    ],
)
def test_written_values_read_back_identically(tmp_path, value):
    env_file = tmp_path / ".env"
    update_env_file(env_file, {"K": value})
    text = env_file.read_text()
    assert dotenv.dotenv_values(env_file) == {"K": value}  # python-dotenv, as the SDK
    assert read_env_file(env_file) == {"K": value}
    if value.startswith("1/"):
        assert text == f"K={value}\n"  # tokens are written unquoted


def test_update_refuses_a_result_that_would_not_read_back(tmp_path):
    # An unterminated quoted key swallows what follows up to the next quote.
    with pytest.raises(ValueError, match="would not read back"):
        update_text(tmp_path, "'broken\n", {"K": "needs quoting"})
    assert (tmp_path / ".env").read_text() == "'broken\n"  # left as it was


def test_format_value_refuses_what_cannot_round_trip():
    with pytest.raises(ValueError, match="line break"):
        format_value("a\nb")
    with pytest.raises(ValueError, match="expand"):
        format_value("a${HOME}")


def test_update_env_file_creates_private_file(tmp_path):
    old_umask = os.umask(0)
    try:
        result = update_env_file(tmp_path / "new.env", {"K": "v"})
    finally:
        os.umask(old_umask)
    assert result.created
    assert mode_of(tmp_path / "new.env") == 0o600
    assert (tmp_path / "new.env").read_text() == "K=v\n"
    # No temp files left; the (empty, private) lock file stays for the next writer.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.env", "new.env.lock"]
    assert (tmp_path / "new.env.lock").read_bytes() == b""
    assert mode_of(tmp_path / "new.env.lock") == 0o600


def test_update_env_file_tightens_mode_and_follows_symlink(tmp_path):
    real = tmp_path / "real.env"
    real.write_bytes(b"# caf\xc3\xa9 \xff raw bytes\nK=old\n")
    real.chmod(0o644)
    link = tmp_path / ".env"
    link.symlink_to(real)

    result = update_env_file(link, {"K": "new"})

    assert result.previous_mode == 0o644
    assert link.is_symlink()
    assert real.read_bytes() == b"# caf\xc3\xa9 \xff raw bytes\nK=new\n"
    assert mode_of(real) == 0o600


def test_concurrent_writers_lose_no_update(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("KEEP=1\n")
    real = env_file_module._edit

    def slow_edit(*args):
        time.sleep(0.3)  # both writers read before either writes, unless locked
        return real(*args)

    monkeypatch.setattr(env_file_module, "_edit", slow_edit)
    writers = [
        threading.Thread(target=update_env_file, args=(env_file, {key: "v"}))
        for key in ("FIRST", "SECOND")
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert read_env_file(env_file) == {"KEEP": "1", "FIRST": "v", "SECOND": "v"}
    assert mode_of(env_file) == 0o600


def test_a_held_lock_times_out_clearly(tmp_path):
    env_file = tmp_path / ".env"
    with open(tmp_path / ".env.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(TimeoutError, match="another program"):
            update_env_file(env_file, {"K": "v"}, lock_timeout=0.2)
    assert not env_file.exists()


def test_a_lock_file_planted_as_a_symlink_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    (tmp_path / ".env.lock").symlink_to(victim)
    with pytest.raises(OSError, match="symbolic link"):
        update_env_file(tmp_path / ".env", {"K": "v"})
    assert not victim.exists()


def test_secrets_are_not_written_into_another_users_file(tmp_path, monkeypatch):
    env_file = tmp_path / ".env"
    env_file.write_text("OTHER=1\n")
    me = os.geteuid()
    monkeypatch.setattr(os, "geteuid", lambda: me + 1)
    with pytest.raises(PermissionError, match="belongs to another user"):
        update_env_file(env_file, {ENV_REFRESH_TOKEN: "secret-value"})
    assert env_file.read_text() == "OTHER=1\n"


def test_comment_out_keeps_the_line_commented_in_place(tmp_path):
    text, result = update_text(
        tmp_path,
        f"A=1\n\nexport {ENV_ACCESS_TOKEN}=pat-value # mine\nB=2\n",
        {ENV_REFRESH_TOKEN: "r"},
        comment_out=[ENV_ACCESS_TOKEN],
    )
    assert text == (
        f"A=1\n\n# export {ENV_ACCESS_TOKEN}=pat-value # mine\nB=2\n{ENV_REFRESH_TOKEN}=r\n"
    )
    assert result.commented_out == [ENV_ACCESS_TOKEN]
    assert dotenv.dotenv_values(tmp_path / ".env") == {"A": "1", "B": "2", ENV_REFRESH_TOKEN: "r"}
    assert mode_of(tmp_path / ".env") == 0o600


def test_comment_out_comments_every_line_of_a_multiline_value(tmp_path):
    text, _ = update_text(
        tmp_path, f"{ENV_ACCESS_TOKEN}='a\nb=c'\nC=3\n", {}, comment_out=[ENV_ACCESS_TOKEN]
    )
    assert text == f"# {ENV_ACCESS_TOKEN}='a\n# b=c'\nC=3\n"
    assert read_env_file(tmp_path / ".env") == {"C": "3"}


def test_comment_out_leaves_an_inactive_token_alone(tmp_path):
    original = f"{ENV_ACCESS_TOKEN}=\n# {ENV_ACCESS_TOKEN}=old\n"
    text, result = update_text(tmp_path, original, {}, comment_out=[ENV_ACCESS_TOKEN])
    assert text == original
    assert result.commented_out == []


def test_a_refused_update_names_keys_never_values(tmp_path):
    with pytest.raises(ValueError, match="would not read back") as raised:
        update_text(tmp_path, "'broken\n", {ENV_CLIENT_SECRET: "cs secret value"})
    assert ENV_CLIENT_SECRET in str(raised.value)
    assert "secret value" not in str(raised.value)
