"""The README documents what the code does: settings table, commands, streams."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tap_asana_vl.tap import STREAM_TYPES

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_settings_table_is_generated_from_about():
    proc = subprocess.run(
        [sys.executable, "scripts/update_readme.py", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_ci_runs_exactly_the_readme_test_command():
    commands = re.findall(r"^(bash scripts/\S+\.sh)$", README, flags=re.MULTILINE)
    assert "bash scripts/test.sh" in commands
    assert "bash scripts/run.sh" in commands
    assert "bash scripts/test.sh" in (REPO / ".ci/run").read_text().splitlines()


def test_every_stream_is_in_the_stream_table():
    for stream_type in STREAM_TYPES:
        assert re.search(rf"^\| `{stream_type.name}` \|", README, flags=re.MULTILINE), (
            stream_type.name
        )
