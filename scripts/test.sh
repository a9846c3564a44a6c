#!/usr/bin/env bash
# Install everything the test suite needs, then run it (arguments go to pytest).
# Used as-is by CI (.ci/run): a fresh clone, as root, CI=true, no stdin, no Asana access.
set -euo pipefail
cd "$(dirname "$0")/.."

# 1. uv, which installs Python dependencies from uv.lock (and Meltano for the E2E test).
if command -v uv >/dev/null 2>&1; then
  UV=(uv)
else
  python3 -m pip install --quiet --disable-pip-version-check 'uv>=0.9' \
    || python3 -m pip install --quiet --user 'uv>=0.9'
  # The new executable may not be on PATH yet (pyenv shims, ~/.local/bin): use the module.
  UV=(python3 -m uv)
fi

# 2. PostgreSQL server binaries for the end-to-end tests (they start their own
#    throw-away servers on free ports, and scripts/run.sh's embedded one in a copy of
#    the checkout; nothing is left running).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "Installing PostgreSQL from Debian packages for the end-to-end tests..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  else
    echo "PostgreSQL is not installed: the end-to-end tests will be skipped" \
         "(install the 'postgresql' package to run it)." >&2
  fi
fi

# 3. Python dependencies, exactly as locked.
"${UV[@]}" sync --locked

# 4. The suite: lint, then tests.
"${UV[@]}" run ruff check .
"${UV[@]}" run ruff format --check .
"${UV[@]}" run pytest "$@"
