# shellcheck shell=bash disable=SC2034  # (the variables are for the scripts sourcing it)
# Shared by scripts/run.sh, scripts/postgres.sh and scripts/meltano (sourced, not run):
# where the project and its embedded PostgreSQL server live, and how to reach uv.

PROJECT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MELTANO_VERSION=4.4.1

# The embedded PostgreSQL server (git-ignored, kept between runs).
PG_DIR="$PROJECT_DIR/.postgres"
PG_DATA="$PG_DIR/data"
PG_LOG="$PG_DIR/server.log"
PG_PORT_FILE="$PG_DIR/port" # chosen once, then kept: saved connections keep working
PG_HOST=127.0.0.1           # it listens on loopback only
PG_SUPERUSER=postgres
PG_USER=asana # the role the loader connects as (owner of the database)
PG_DATABASE=warehouse

die() {
  echo "$*" >&2
  exit 1
}

# UV: the command that runs uv. Installed with pip when missing, and its directory put
# on PATH, because Meltano's uv venv backend looks for `uv` there.
find_uv() {
  if command -v uv >/dev/null 2>&1; then
    UV=(uv)
    return
  fi
  python3 -m pip install --quiet --disable-pip-version-check 'uv>=0.9' \
    || python3 -m pip install --quiet --disable-pip-version-check --user 'uv>=0.9' \
    || die "Could not install uv with pip: install it (https://docs.astral.sh/uv/) and re-run."
  local uv_bin
  uv_bin="$(python3 -c 'import uv; print(uv.find_uv_bin())')"
  PATH="$(dirname "$uv_bin"):$PATH"
  export PATH
  UV=("$uv_bin")
}

# True when the user chose their own PostgreSQL server: TARGET_POSTGRES_HOST or
# TARGET_POSTGRES_SQLALCHEMY_URL set (not empty) in the environment or in .env.
external_postgres_configured() {
  if [ -n "${TARGET_POSTGRES_HOST:-}" ] || [ -n "${TARGET_POSTGRES_SQLALCHEMY_URL:-}" ]; then
    return 0
  fi
  # .env lines as Meltano's dotenv reads them: `[export] NAME=value`, value maybe quoted,
  # `NAME=  # comment` being empty.
  [ -f "$PROJECT_DIR/.env" ] && grep -qE \
    '^[[:space:]]*(export[[:space:]]+)?TARGET_POSTGRES_(HOST|SQLALCHEMY_URL)[[:space:]]*=[[:space:]]*["'\'']?[^"'\''[:space:]#]' \
    "$PROJECT_DIR/.env"
}

# True once `scripts/postgres.sh start` created the embedded server.
embedded_postgres_created() {
  [ -f "$PG_PORT_FILE" ]
}

embedded_postgres_port() {
  cat "$PG_PORT_FILE"
}

embedded_postgres_url() {
  echo "postgresql://$PG_USER@$PG_HOST:$(embedded_postgres_port)/$PG_DATABASE"
}

# Export the loader's connection settings for the embedded server, unless the user
# chose their own. Real environment variables take precedence over .env in Meltano,
# so these reach every `scripts/meltano` command. The server trusts loopback
# connections: the password is empty (target-postgres 0.8.1 needs the key set).
export_embedded_postgres_env() {
  if external_postgres_configured || ! embedded_postgres_created; then
    return 1
  fi
  export TARGET_POSTGRES_HOST="$PG_HOST"
  TARGET_POSTGRES_PORT="$(embedded_postgres_port)"
  export TARGET_POSTGRES_PORT
  export TARGET_POSTGRES_USER="$PG_USER"
  export TARGET_POSTGRES_PASSWORD=""
  export TARGET_POSTGRES_DATABASE="$PG_DATABASE"
}
