#!/usr/bin/env bash
# Load Asana into PostgreSQL: `meltano run tap-asana-vl target-postgres`, set up first.
#   1. .env (copy of .secrets.example) holds the Asana credentials; made private (0600).
#   2. uv, Meltano 4.4.1 and the plugins are installed; `meltano install` again only
#      when meltano.yml, pyproject.toml or uv.lock changed.
#   3. PostgreSQL: the server named by TARGET_POSTGRES_* in .env or the environment, or
#      else the project's embedded server (scripts/postgres.sh), created and started here.
#   4. The loader's connection is checked, then the run. Extra arguments go to
#      `meltano run` (e.g. --full-refresh).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$PROJECT_DIR"

# --- 1. Credentials
if [ ! -f .env ]; then
  die "No .env file: copy .secrets.example to .env and put your Asana token in it" \
    "(see README, 'Quick start')."
fi
# It holds secrets: other users must not read it. chmod works for its owner (and root).
env_mode="$(python3 -c 'import os; print(oct(os.stat(".env").st_mode & 0o777)[2:])')"
if [ $((8#$env_mode & 8#077)) -ne 0 ]; then
  if chmod 600 .env 2>/dev/null; then
    echo ".env was open to other users (mode $env_mode); it holds secrets, so it is now private (chmod 600)."
  else
    die ".env is open to other users (mode $env_mode) and is not yours (owner:" \
      "$(stat -c %U .env 2>/dev/null || stat -f %Su .env)): ask its owner to run \`chmod 600 .env\` (or" \
      "make a .env of your own), then re-run."
  fi
fi

# --- 2. Meltano and the plugins
find_uv
INSTALL_STAMP=.meltano/run-sh-install.sha256
install_fingerprint() {
  # Whatever `meltano install` depends on: the plugin definitions, the tap's own
  # packaging and locked dependencies, and the Meltano version.
  { echo "meltano==$MELTANO_VERSION"; cat meltano.yml pyproject.toml uv.lock; } \
    | python3 -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
}
LOADER_PYTHON=.meltano/loaders/target-postgres/venv/bin/python
TAP=.meltano/extractors/tap-asana-vl/venv/bin/tap-asana-vl
fingerprint="$(install_fingerprint)"
if [ -x "$LOADER_PYTHON" ] && [ -x "$TAP" ] \
  && [ "$(cat "$INSTALL_STAMP" 2>/dev/null)" = "$fingerprint" ]; then
  echo "Meltano plugins up to date (meltano.yml, pyproject.toml and uv.lock unchanged)."
else
  echo "Installing Meltano $MELTANO_VERSION and the plugins (meltano install)..."
  scripts/meltano install
  echo "$fingerprint" >"$INSTALL_STAMP"
fi

# --- 3. PostgreSQL
embedded=()
if external_postgres_configured; then
  echo "Loading into your PostgreSQL server (TARGET_POSTGRES_* settings)."
else
  bash scripts/postgres.sh start
  export_embedded_postgres_env
  embedded=(--embedded)
fi

# --- 4. The loader's connection, with exactly the settings Meltano will pass it.
# (The dump holds the password: it stays in this variable and the pipe.)
if ! loader_config="$(scripts/meltano invoke --dump=config target-postgres 2>.meltano/dump.log)"; then
  cat .meltano/dump.log >&2
  die "Could not read target-postgres's settings (meltano invoke --dump=config target-postgres failed, above)."
fi
printf '%s' "$loader_config" | "$LOADER_PYTHON" scripts/check_postgres.py "${embedded[@]}" || exit 1
unset loader_config

scripts/meltano run tap-asana-vl target-postgres "$@"

if [ ${#embedded[@]} -gt 0 ]; then
  echo
  echo "Loaded into the embedded PostgreSQL server (kept running; data in .postgres/)."
  bash scripts/postgres.sh status | tail -n +2
fi
