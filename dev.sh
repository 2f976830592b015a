#!/usr/bin/env bash
# qt_pipeline developer entry point. Creates/reuses the virtual environment, installs the project, then:
#   ./dev.sh main [qt run options]   run the main job on embedded defaults
#   ./dev.sh test [pytest options]   run the whole test suite
#   ./dev.sh test-servers            install the TimescaleDB and PgBouncer test servers (else: on first use)
#   ./dev.sh ui                      open the Dagster UI (dagster dev) on http://127.0.0.1:3000
#   ./dev.sh qt <command> ...        any operator command of the `qt` CLI
#   ./dev.sh lock [uv lock options]  re-resolve uv.lock (+ requirements.lock.txt); --check: are they current?
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$PWD
VENV=${QT_VENV:-$ROOT/.venv}
export QT_DATA_DIR=${QT_DATA_DIR:-$ROOT/.qt_data}
export DAGSTER_HOME=${DAGSTER_HOME:-$QT_DATA_DIR/dagster_home}

UV_REQ='uv>=0.9,<0.14'
log() { printf '[dev.sh] %s\n' "$*" >&2; }

pick_python() {
  for py in python3.11 python3.12 python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 13)))'; then
      echo "$py"; return 0
    fi
  done
  log "need Python 3.11 or 3.12 on PATH"; exit 1
}

# uv is how the environment is installed: exactly the versions in uv.lock. It is taken from PATH,
# ~/.local/bin or the chosen Python; else installed with pip (--user).
find_uv() {
  UV=$(command -v uv || true)
  if [[ -z $UV && -x $HOME/.local/bin/uv ]]; then UV=$HOME/.local/bin/uv; fi
  if [[ -z $UV ]]; then UV=$("$1" -c 'import uv; print(uv.find_uv_bin())' 2>/dev/null || true); fi
}

ensure_uv() {
  find_uv "$1"
  if [[ -z $UV ]]; then
    log "installing uv (the installer that reads uv.lock) with pip"
    "$1" -m pip install -q --user "$UV_REQ" 2>/dev/null || "$1" -m pip install -q "$UV_REQ" 2>/dev/null || true
    find_uv "$1"
  fi
}

ensure_env() {
  local py stamp want
  py=$(pick_python)
  UV=
  [[ ${QT_INSTALLER:-uv} == pip ]] || ensure_uv "$py"   # QT_INSTALLER=pip: the fallback path, on purpose
  [[ -f uv.lock ]] || { log "uv.lock is missing: run ./dev.sh lock"; exit 1; }
  stamp=$VENV/.qt_installed
  # keyed on the lock (and pyproject: scripts, extras) and on the installer used
  local installer=pip
  [[ -z $UV ]] || installer=uv
  want="$(cat uv.lock pyproject.toml | sha256sum | cut -d' ' -f1) $installer"
  if [[ ! -x $VENV/bin/python || ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    if [[ -n $UV ]]; then
      log "installing qt_pipeline and the versions pinned in uv.lock into $VENV (uv sync)"
      # --locked: fail (instead of silently re-resolving) when pyproject.toml changed without `./dev.sh lock`
      UV_PROJECT_ENVIRONMENT=$VENV "$UV" sync -q --locked --extra dev --python "$py" --no-python-downloads ||
        { log "uv sync failed; if pyproject.toml changed, run ./dev.sh lock (README: Reproducible installs)"; exit 1; }
    else
      # No uv: the same pins, exported from uv.lock with hashes (./dev.sh lock keeps the file in step).
      log "uv unavailable; installing the pinned versions of requirements.lock.txt with pip into $VENV"
      [[ -x $VENV/bin/python ]] || "$py" -m venv "$VENV" || { log "need the venv module (Debian: apt-get install python3-venv)"; exit 1; }
      # --no-deps: the export is the complete closure (and pip rejects extras such as gql[requests] in hash mode)
      "$VENV/bin/python" -m pip install -q --require-hashes --no-deps -r requirements.lock.txt
      "$VENV/bin/python" -m pip install -q --no-deps -e .
    fi
    echo "$want" >"$stamp"
  fi
  ensure_dbt_manifest
  mkdir -p "$DAGSTER_HOME"
  [[ -f $DAGSTER_HOME/dagster.yaml ]] || cp infra/dagster.yaml "$DAGSTER_HOME/dagster.yaml" 2>/dev/null || true
}

lock() {
  # Re-resolve uv.lock (arguments go to `uv lock`, e.g. --upgrade-package dagster) and re-export the
  # hashed requirements.lock.txt that the pip fallback installs. `lock --check`: both up to date?
  local py
  py=$(pick_python)
  ensure_uv "$py"
  [[ -n $UV ]] || { log "need uv (pip install '$UV_REQ')"; exit 1; }
  local export=("$UV" export -q --frozen --format requirements-txt --extra dev --no-emit-project)
  if [[ ${1:-} == --check ]]; then
    "$UV" lock --check --python "$py" || { log "uv.lock is out of date with pyproject.toml: run ./dev.sh lock"; exit 1; }
    "${export[@]}" | cmp -s - requirements.lock.txt ||
      { log "requirements.lock.txt is out of date with uv.lock: run ./dev.sh lock"; exit 1; }
    log "uv.lock and requirements.lock.txt are up to date"
  else
    "$UV" lock --python "$py" "$@"
    "${export[@]}" >requirements.lock.txt
    log "uv.lock and requirements.lock.txt updated; commit both"
  fi
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
  [[ -z ${QT_TEST_PG_ADMIN_URL:-} ]] || return 0
  if command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then return 0; fi
  if command -v pg_ctlcluster >/dev/null 2>&1 && [[ -d /etc/postgresql ]]; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && return 0; sleep 1; done
  fi
  log "PostgreSQL is not reachable on 127.0.0.1:5432: install/start PostgreSQL 15-17 with trust auth for 'postgres' (README 'Prerequisites'), or set QT_TEST_PG_ADMIN_URL to another server"
}

check_node() {
  # The TimescaleDB tests (-m timescale) run the repository's own test server on Node.js
  # (qt_pipeline_tests/timescale_harness; it installs its pinned npm package on first use).
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    log "Node.js >= 18.3 and npm are not on PATH: the TimescaleDB tests will fail (install Node.js, see README 'Prerequisites'; or pass -m 'not timescale')"
  fi
}

check_pgbouncer_tools() {
  # The PgBouncer tests (-m pgbouncer) unpack the pinned Debian package on first use
  # (qt_pipeline_tests/pgbouncer_harness: apt-get download + dpkg-deb -x, no root).
  if [[ ! -f $ROOT/qt_pipeline_tests/pgbouncer_harness/dist/.qt-packages ]] &&
    { ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; }; then
    log "apt-get/dpkg-deb are not on PATH: the PgBouncer tests will fail (they fetch Debian's pgbouncer package, see README 'Prerequisites'; or pass -m 'not pgbouncer')"
  fi
}

install_test_servers() {
  # The test servers of the -m timescale / -m pgbouncer tests install themselves on first use, inside the
  # suite (npm ci; apt-get download). This installs both up front (CI does, before the suite), and fails
  # with the harness's one-line reason if one cannot be installed.
  local harness
  for harness in timescale_harness pgbouncer_harness; do
    "$ROOT/qt_pipeline_tests/$harness/start" --install-only ||
      { log "could not install the $harness test server (its reason is above); see qt_pipeline_tests/$harness/README.md"; exit 1; }
  done
  log "test servers installed: TimescaleDB (qt_pipeline_tests/timescale_harness), PgBouncer (qt_pipeline_tests/pgbouncer_harness)"
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
    check_node
    check_pgbouncer_tools
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  test-servers)
    install_test_servers
    ;;
  ui)
    ensure_env
    exec "$VENV/bin/dagster" dev -w workspace.yaml "$@"
    ;;
  lock)
    lock "$@"
    ;;
  qt)
    ensure_env
    exec "$VENV/bin/qt" "$@"
    ;;
  *)
    sed -n '2,8p' "$0"; exit 2
    ;;
esac
