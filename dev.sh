#!/usr/bin/env bash
# qt_pipeline developer entry point. Creates/reuses the virtual environment, installs the project, then:
#   ./dev.sh main [qt run options]   run the main job on embedded defaults
#   ./dev.sh test [pytest options]   run the whole test suite
#   ./dev.sh ui                      open the Dagster UI (dagster dev) on http://127.0.0.1:3000
#   ./dev.sh qt <command> ...        any operator command of the `qt` CLI
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=${QT_VENV:-$ROOT/.venv}
export QT_DATA_DIR=${QT_DATA_DIR:-$ROOT/.qt_data}
export DAGSTER_HOME=${DAGSTER_HOME:-$QT_DATA_DIR/dagster_home}

log() { printf '[dev.sh] %s\n' "$*" >&2; }

pick_python() {
  for py in python3.11 python3.12 python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))'; then
      echo "$py"; return 0
    fi
  done
  log "need Python 3.11 or 3.12 on PATH"; exit 1
}

ensure_env() {
  local py stamp want
  py=$(pick_python)
  if ! command -v uv >/dev/null 2>&1 && [[ ! -x $HOME/.local/bin/uv ]]; then
    log "installing uv (fast installer) with pip"
    "$py" -m pip install -q --user uv 2>/dev/null || "$py" -m pip install -q uv || true
  fi
  local UV
  UV=$(command -v uv || true)
  if [[ -z $UV && -x $HOME/.local/bin/uv ]]; then UV=$HOME/.local/bin/uv; fi
  if [[ ! -x $VENV/bin/python ]]; then
    log "creating virtual environment $VENV"
    if [[ -n $UV ]]; then "$UV" venv -q --python "$py" "$VENV"; else "$py" -m venv "$VENV"; fi
  fi
  stamp=$VENV/.qt_installed
  want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
  if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    log "installing qt_pipeline and its dependencies into $VENV"
    if [[ -n $UV ]]; then
      VIRTUAL_ENV=$VENV "$UV" pip install -q -e '.[dev]'
    else
      "$VENV/bin/python" -m pip install -q -e '.[dev]'
    fi
    echo "$want" >"$stamp"
  fi
  ensure_dbt_manifest
  mkdir -p "$DAGSTER_HOME"
  [[ -f $DAGSTER_HOME/dagster.yaml ]] || cp infra/dagster.yaml "$DAGSTER_HOME/dagster.yaml" 2>/dev/null || true
}

ensure_dbt_manifest() {
  # The Dagster code location loads the dbt_timescale models from dbt's manifest: (re)make it with the
  # venv's dbt when the dbt project changed since the last parse (a few seconds, once per change).
  local dir=$ROOT/dbt_timescale stamp want
  [[ -d $dir ]] || return 0
  stamp=$dir/target/.qt_parsed
  want=$(cd "$dir" && find . -path ./target -prune -o -path ./logs -prune -o -type f \( -name '*.sql' -o -name '*.yml' \) -print \
    | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
  if [[ ! -f $dir/target/manifest.json || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    log "parsing the dbt project (dbt_timescale) for the Dagster code location"
    if (cd "$dir" && "$VENV/bin/dbt" parse --quiet --profiles-dir . --target-path target >/dev/null); then
      echo "$want" >"$stamp"
    else
      log "dbt parse failed: run '$VENV/bin/dbt parse --project-dir dbt_timescale --profiles-dir dbt_timescale' to see why"
    fi
  fi
}

ensure_postgres() {
  # The test suite talks to the machine's PostgreSQL (127.0.0.1:5432). Start it if it is down.
  if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then return 0; fi
  if command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql ]]; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && return 0; sleep 1; done
  fi
  log "PostgreSQL is not reachable on 127.0.0.1:5432 (set QT_TEST_PG_ADMIN_URL to use another server)"
}

cmd=${1:-main}
shift || true
case $cmd in
  main)
    ensure_env
    exec "$VENV/bin/qt" run "$@"
    ;;
  test)
    ensure_env
    ensure_postgres
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  ui)
    ensure_env
    exec "$VENV/bin/dagster" dev -w workspace.yaml "$@"
    ;;
  qt)
    ensure_env
    exec "$VENV/bin/qt" "$@"
    ;;
  *)
    sed -n '2,7p' "$0"; exit 2
    ;;
esac
