#!/usr/bin/env python3
"""Refresh the README's settings table from `tap-asana-vl --about --format=markdown`.

The table between the `settings:start` and `settings:end` markers is generated, so the
README cannot drift from the settings the tap really has (tests/test_readme.py checks).
Usage: python scripts/update_readme.py [--check]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def settings_table() -> str:
    """The `## Settings` table of the tap's --about markdown."""
    about = subprocess.run(
        [sys.executable, "-m", "tap_asana_vl", "--about", "--format=markdown"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = about.splitlines()
    start = lines.index("## Settings") + 1
    table = []
    for line in lines[start:]:
        if line.startswith("#"):
            break
        table.append(line)
    return "\n".join(table).strip()


def render(readme: str) -> str:
    """README text with the generated table in place."""
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{settings_table()}\n{END}{tail}"


def main() -> int:
    """Rewrite the README (or, with --check, report whether it is current)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the README is stale")
    args = parser.parse_args()
    current = README.read_text(encoding="utf-8")
    if START not in current or END not in current:
        print(f"README.md lacks the {START} / {END} markers", file=sys.stderr)
        return 1
    updated = render(current)
    if args.check:
        if updated != current:
            print("README settings table is stale: run scripts/update_readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
