"""Run several ``meltano`` commands in one Python process: Meltano's own CLI, in a row.

Run with Meltano's Python (``uv tool run --from meltano==X python tests/meltano_batch.py``),
the commands (a JSON list of argument lists) on stdin. Each ``meltano`` process spends
~3 s starting; one per setting would make ``config set`` of every setting cost a minute
and a half. Stops at the first command that fails, with its exit code.
"""

import json
import sys

from meltano.cli import main

for args in json.load(sys.stdin):
    sys.argv = ["meltano", *args]
    try:
        main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            # The first words only: the last may be a (dummy) secret's value.
            print(f"meltano {' '.join(args[:4])} … failed ({exc.code})", file=sys.stderr)
            sys.exit(exc.code)
