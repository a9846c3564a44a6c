#!/usr/bin/env bash
# Install Meltano, the tap and target-postgres, then load Asana into PostgreSQL:
#   meltano run tap-asana-vl target-postgres
# Credentials and connection settings come from .env (copy .secrets.example).
# Extra arguments go to `meltano run` (e.g. --full-refresh).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f .env ]; then
  echo "No .env file: copy .secrets.example to .env and fill in your Asana credentials" \
       "and PostgreSQL settings (see README, 'Quick start')." >&2
  exit 2
fi
if command -v uv >/dev/null 2>&1; then
  UV=(uv)
else
  python3 -m pip install --quiet --disable-pip-version-check 'uv>=0.9' \
    || python3 -m pip install --quiet --user 'uv>=0.9'
  # The new executable may not be on PATH yet (pyenv shims, ~/.local/bin): use the module.
  UV=(python3 -m uv)
fi

meltano() { "${UV[@]}" tool run --from 'meltano==4.4.1' meltano "$@"; }
meltano install
meltano run tap-asana-vl target-postgres "$@"
