# shellcheck shell=bash
# Shared helpers for evshift's scripts (scripts/, bench/scripts/). Source it; do not run it.
#
#   source "$(dirname "$0")/lib.sh"
#
# What it provides:
#   log / warn / die            messages on stderr, prefixed with the script's name
#   defer CMD [ARG...]          run CMD at exit (LIFO); the EXIT/INT/TERM trap is installed here
#   on_exit_report FUNC         call FUNC STATUS after the deferred commands
#   show_log_on_failure FILE    print the tail of FILE if the script exits non-zero
#   ensure_postgres             find (or apt-get install) the PostgreSQL server; sets PG_BINDIR
#   ensure_pgbouncer            find (or apt-get install) pgbouncer; sets PGBOUNCER_BIN
#   ensure_python_venv          create .venv with psycopg[binary]; sets EVSHIFT_PYTHON
#   ensure_eventsource_venv     create .venv-eventsource (eventsource-py, needs Python >= 3.13);
#                               sets EVSHIFT_EVENTSOURCE_PYTHON, or leaves it unset without one
#   free_port                   print a free TCP port on 127.0.0.1
#   start_pg NAME PORT          throwaway cluster (trust auth, fsync=off) on 127.0.0.1:PORT
#   stop_pg NAME                stop it and delete its files (done at exit anyway)
#   pg_dir NAME / pg_port NAME  where a started cluster lives
#   as_server_user CMD...       run CMD as `postgres` when we are root, else as ourselves
#   run_fg CMD...               run CMD in the foreground, stopped at once if we are signalled
#   start_bg LOGFILE CMD...     start CMD in the background, stopped at exit; sets BG_PID
#   stop_pid PID                SIGTERM, then SIGKILL after 10 s
#   wait_for_pg HOST PORT [SECS] [PID]  wait until a Postgres-protocol server accepts connections
#   build_evshift [release|debug]       cargo build the proxy binary; sets EVSHIFT_BIN

# Sourced twice is harmless.
if [[ -n "${EVSHIFT_LIB_SOURCED:-}" ]]; then
    return 0
fi
EVSHIFT_LIB_SOURCED=1

EVSHIFT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export EVSHIFT_ROOT
EVSHIFT_SCRIPT_NAME="$(basename "$0")"

# The OS user that runs PostgreSQL and PgBouncer when we are root (both refuse to run as root).
SERVER_USER="${SERVER_USER:-postgres}"

# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------

log() { printf '[%s] %s\n' "$EVSHIFT_SCRIPT_NAME" "$*" >&2; }
warn() { printf '[%s] warning: %s\n' "$EVSHIFT_SCRIPT_NAME" "$*" >&2; }
die() {
    printf '[%s] error: %s\n' "$EVSHIFT_SCRIPT_NAME" "$*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------
# Cleanup: one trap, a stack of deferred commands
# ---------------------------------------------------------------------------------------------

_DEFERRED=()
_FAILURE_LOGS=()
_EXIT_REPORT=""
_FG_PID=""

# defer CMD [ARG...]: run at exit, last registered first.
defer() {
    local quoted
    quoted="$(printf '%q ' "$@")"
    _DEFERRED+=("$quoted")
}

# show_log_on_failure FILE: on a non-zero exit, print the last lines of FILE to help diagnose.
show_log_on_failure() { _FAILURE_LOGS+=("$1"); }

# on_exit_report FUNC: after cleanup, call FUNC with the script's exit status (its output shows).
on_exit_report() { _EXIT_REPORT="$1"; }

_run_cleanup() {
    local status=$?
    trap - EXIT INT TERM
    set +e
    if [[ -n "$_FG_PID" ]]; then
        stop_pid "$_FG_PID" >/dev/null 2>&1
    fi
    # Not after an interrupt (130, 143): the user asked to stop.
    if ((status != 0 && status != 130 && status != 143)) && ((${#_FAILURE_LOGS[@]} > 0)); then
        local f
        for f in "${_FAILURE_LOGS[@]}"; do
            if [[ -s "$f" ]]; then
                printf '[%s] --- last lines of %s ---\n' "$EVSHIFT_SCRIPT_NAME" "$f" >&2
                tail -n 25 "$f" >&2
            fi
        done
    fi
    local i
    for ((i = ${#_DEFERRED[@]} - 1; i >= 0; i--)); do
        eval "${_DEFERRED[i]}" >/dev/null 2>&1
    done
    if [[ -n "$_EXIT_REPORT" ]]; then
        "$_EXIT_REPORT" "$status"
    fi
    exit "$status"
}
trap _run_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Installing what is missing
# ---------------------------------------------------------------------------------------------

_APT_UPDATED=""

# apt_install PKG...: install Debian packages, non-interactively, saying so.
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        die "missing: $* (no apt-get here: install them with your package manager)"
    fi
    if [[ "$(id -u)" -ne 0 ]]; then
        die "missing: $* (install them, e.g. as root: apt-get install -y $*)"
    fi
    log "installing missing Debian packages: $* (apt-get update && apt-get install -y $*)"
    export DEBIAN_FRONTEND=noninteractive
    if [[ -z "$_APT_UPDATED" ]]; then
        apt-get update -qq </dev/null >&2 || die "apt-get update failed"
        _APT_UPDATED=1
    fi
    apt-get install -y -qq --no-install-recommends "$@" </dev/null >&2 \
        || die "apt-get install $* failed"
}

_is_pg_bindir() { [[ -n "$1" && -x "$1/initdb" && -x "$1/pg_ctl" && -x "$1/postgres" ]]; }

# _find_pg_bindir: print the PostgreSQL server bin directory, or nothing.
_find_pg_bindir() {
    local dir candidate
    if [[ -n "${PG_BINDIR:-}" ]] && _is_pg_bindir "$PG_BINDIR"; then
        printf '%s\n' "$PG_BINDIR"
        return 0
    fi
    if candidate="$(command -v initdb 2>/dev/null)"; then
        dir="$(dirname "$(readlink -f "$candidate")")"
        if _is_pg_bindir "$dir"; then
            printf '%s\n' "$dir"
            return 0
        fi
    fi
    if command -v pg_config >/dev/null 2>&1; then
        dir="$(pg_config --bindir 2>/dev/null || true)"
        if _is_pg_bindir "$dir"; then
            printf '%s\n' "$dir"
            return 0
        fi
    fi
    # Debian layout: the newest major version wins.
    local dirs=()
    mapfile -t dirs < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k4,4 -V -r)
    for dir in "${dirs[@]}"; do
        if _is_pg_bindir "$dir"; then
            printf '%s\n' "$dir"
            return 0
        fi
    done
    return 1
}

# ensure_postgres: sets and exports PG_BINDIR (initdb, pg_ctl, postgres, psql, pgbench live there).
ensure_postgres() {
    local dir
    if ! dir="$(_find_pg_bindir)"; then
        log "PostgreSQL server binaries (initdb, pg_ctl) not found"
        apt_install postgresql postgresql-contrib
        dir="$(_find_pg_bindir)" || die "PostgreSQL still not found after installing it"
    fi
    if [[ ! -x "$dir/psql" || ! -x "$dir/pgbench" ]]; then
        log "psql or pgbench missing from $dir"
        apt_install postgresql-contrib postgresql-client
        [[ -x "$dir/psql" && -x "$dir/pgbench" ]] || die "psql/pgbench still missing from $dir"
    fi
    if [[ "$(id -u)" -eq 0 ]] && ! id "$SERVER_USER" >/dev/null 2>&1; then
        die "running as root but there is no OS user '$SERVER_USER' to run PostgreSQL as"
    fi
    PG_BINDIR="$dir"
    export PG_BINDIR
}

# ensure_pgbouncer: sets PGBOUNCER_BIN.
ensure_pgbouncer() {
    local bin
    bin="$(command -v pgbouncer 2>/dev/null || true)"
    if [[ -z "$bin" && -x /usr/sbin/pgbouncer ]]; then
        bin=/usr/sbin/pgbouncer
    fi
    if [[ -z "$bin" ]]; then
        log "pgbouncer not found"
        apt_install pgbouncer
        bin="$(command -v pgbouncer 2>/dev/null || true)"
        [[ -z "$bin" && -x /usr/sbin/pgbouncer ]] && bin=/usr/sbin/pgbouncer
        [[ -n "$bin" ]] || die "pgbouncer still not found after installing it"
    fi
    PGBOUNCER_BIN="$bin"
    export PGBOUNCER_BIN
}

# ensure_python_venv: a virtualenv at $EVSHIFT_ROOT/.venv with psycopg[binary] and whatever
# tests/python/requirements.txt lists. Re-installs only when that list changes. Sets and
# exports EVSHIFT_PYTHON.
ensure_python_venv() {
    local venv="$EVSHIFT_ROOT/.venv"
    local req="$EVSHIFT_ROOT/tests/python/requirements.txt"
    local python="${EVSHIFT_BASE_PYTHON:-python3}"
    local want stamp="$venv/.evshift-requirements"
    want="psycopg[binary]"
    if [[ -f "$req" ]]; then
        want="$want $(sha256sum "$req" | cut -d' ' -f1)"
    fi
    if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
        && "$venv/bin/python" -c 'import psycopg' >/dev/null 2>&1; then
        EVSHIFT_PYTHON="$venv/bin/python"
        export EVSHIFT_PYTHON
        return 0
    fi
    command -v "$python" >/dev/null 2>&1 || apt_install python3 python3-venv
    if [[ ! -x "$venv/bin/python" ]]; then
        log "creating the Python virtualenv $venv ($("$python" --version 2>&1))"
        if ! "$python" -m venv "$venv" >&2; then
            rm -rf "$venv"
            log "python3 -m venv failed; the venv module is probably missing"
            apt_install python3-venv
            "$python" -m venv "$venv" >&2 || die "cannot create $venv"
        fi
    fi
    local pip=("$venv/bin/python" -m pip --disable-pip-version-check --no-input -q)
    log "installing psycopg[binary] into $venv (pip, from PyPI)"
    "${pip[@]}" install 'psycopg[binary]' >&2 || die "pip install psycopg[binary] failed"
    if [[ -f "$req" ]]; then
        log "installing ${req#"$EVSHIFT_ROOT"/} into $venv (pip, from PyPI)"
        "${pip[@]}" install -r "$req" >&2 || die "pip install -r $req failed"
    fi
    printf '%s' "$want" >"$stamp"
    EVSHIFT_PYTHON="$venv/bin/python"
    export EVSHIFT_PYTHON
}

# _python_at_least_3_13 PYTHON: true if PYTHON runs and is Python 3.13 or newer (a pyenv shim of
# a version that is not selected exists on PATH but fails to run).
_python_at_least_3_13() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 13) else 1)' >/dev/null 2>&1
}

# _find_python_3_13: print the path of a Python >= 3.13 interpreter, or nothing. Looks at
# $EVSHIFT_EVENTSOURCE_BASE_PYTHON, python3.13 (and newer, and python3) on PATH, then pyenv's
# versions and shims (/root/.pyenv, $PYENV_ROOT, `pyenv root`).
_find_python_3_13() {
    local candidates=() candidate root
    [[ -n "${EVSHIFT_EVENTSOURCE_BASE_PYTHON:-}" ]] \
        && candidates+=("$EVSHIFT_EVENTSOURCE_BASE_PYTHON")
    for candidate in python3.13 python3.14 python3.15 python3; do
        candidate="$(command -v "$candidate" 2>/dev/null)" && candidates+=("$candidate")
    done
    local roots=(/root/.pyenv "${PYENV_ROOT:-}")
    if command -v pyenv >/dev/null 2>&1; then
        roots+=("$(pyenv root 2>/dev/null || true)")
    fi
    for root in "${roots[@]}"; do
        [[ -n "$root" && -d "$root/versions" ]] || continue
        mapfile -t -O "${#candidates[@]}" candidates < <(
            printf '%s\n' "$root"/versions/3.1[3-9]*/bin/python3 | sort -V -r
        )
        candidates+=("$root/shims/python3.13")
    done
    for candidate in "${candidates[@]}"; do
        [[ -x "$candidate" ]] || continue
        if _python_at_least_3_13 "$candidate"; then
            # The real interpreter, not a shim: the venv must not depend on pyenv's selection.
            "$candidate" -c 'import sys; print(sys.executable)'
            return 0
        fi
    done
    return 1
}

# ensure_eventsource_venv: a virtualenv at $EVSHIFT_ROOT/.venv-eventsource with
# tests/python/requirements-eventsource.txt (eventsource-py[postgresql], which needs Python
# >= 3.13). Re-installs only when that list or the interpreter changes. Sets and exports
# EVSHIFT_EVENTSOURCE_PYTHON; without a Python >= 3.13 it says so and leaves it unset (the tests
# that need it then skip, or fail under CI).
ensure_eventsource_venv() {
    local venv="$EVSHIFT_ROOT/.venv-eventsource"
    local req="$EVSHIFT_ROOT/tests/python/requirements-eventsource.txt"
    local python want stamp="$venv/.evshift-requirements"
    unset EVSHIFT_EVENTSOURCE_PYTHON
    [[ -f "$req" ]] || die "missing $req"
    if ! python="$(_find_python_3_13)"; then
        warn "no Python >= 3.13 found (python3.13 on PATH, /root/.pyenv/versions/3.13*, pyenv):" \
            "EVSHIFT_EVENTSOURCE_PYTHON stays unset and the eventsource-py tests cannot run" \
            "(set EVSHIFT_EVENTSOURCE_BASE_PYTHON to a Python >= 3.13 to use one)"
        return 0
    fi
    want="$python $(sha256sum "$req" | cut -d' ' -f1)"
    if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
        && "$venv/bin/python" -c 'import eventsource, asyncpg' >/dev/null 2>&1; then
        EVSHIFT_EVENTSOURCE_PYTHON="$venv/bin/python"
        export EVSHIFT_EVENTSOURCE_PYTHON
        return 0
    fi
    if [[ -d "$venv" ]]; then
        rm -rf "$venv"
    fi
    log "creating the Python virtualenv $venv ($("$python" --version 2>&1), $python)"
    "$python" -m venv "$venv" >&2 || die "cannot create $venv with $python"
    log "installing ${req#"$EVSHIFT_ROOT"/} into $venv (pip, from PyPI)"
    "$venv/bin/python" -m pip --disable-pip-version-check --no-input -q install -r "$req" >&2 \
        || die "pip install -r $req failed"
    printf '%s' "$want" >"$stamp"
    EVSHIFT_EVENTSOURCE_PYTHON="$venv/bin/python"
    export EVSHIFT_EVENTSOURCE_PYTHON
}

# ---------------------------------------------------------------------------------------------
# Processes and ports
# ---------------------------------------------------------------------------------------------

_TAKEN_PORTS=" "

# _port_in_use PORT: true if something accepts TCP connections on 127.0.0.1:PORT.
_port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port: print a TCP port on 127.0.0.1 that nothing listens on and that this script has not
# handed out before. Below Linux's ephemeral range (32768-60999), so that no outgoing
# connection's local port can make the bind fail later.
free_port() {
    local port tries
    for ((tries = 0; tries < 200; tries++)); do
        port=$((20000 + RANDOM % 12000))
        if [[ "$_TAKEN_PORTS" == *" $port "* ]] || _port_in_use "$port"; then
            continue
        fi
        _TAKEN_PORTS+="$port "
        printf '%s\n' "$port"
        return 0
    done
    die "no free TCP port found on 127.0.0.1"
}

# as_server_user CMD...: PostgreSQL and PgBouncer refuse to run as root.
as_server_user() {
    if [[ "$(id -u)" -eq 0 ]]; then
        runuser -u "$SERVER_USER" -- "$@"
    else
        "$@"
    fi
}

# stop_pid PID: SIGTERM, wait up to 10 s, then SIGKILL. Only for processes this script started.
stop_pid() {
    local pid="$1" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# run_fg CMD...: run CMD to completion, but so that a signal to this script stops CMD and cleans
# up at once (bash runs a trap only after a foreground child ends; it interrupts `wait`).
# CMD gets no stdin.
run_fg() {
    local status=0
    "$@" </dev/null &
    _FG_PID=$!
    wait "$_FG_PID" || status=$?
    _FG_PID=""
    return "$status"
}

# start_bg LOGFILE CMD...: run CMD in the background with output to LOGFILE; it is stopped at
# exit. Sets BG_PID.
start_bg() {
    local logfile="$1"
    shift
    "$@" >"$logfile" 2>&1 </dev/null &
    BG_PID=$!
    defer stop_pid "$BG_PID"
    show_log_on_failure "$logfile"
}

# wait_for_pg HOST PORT [SECONDS] [PID]: until a Postgres-protocol server answers on HOST:PORT.
# With PID, give up early if that process has exited.
wait_for_pg() {
    local host="$1" port="$2" secs="${3:-30}" pid="${4:-}" i
    for ((i = 0; i < secs * 10; i++)); do
        if "$PG_BINDIR/pg_isready" -q -h "$host" -p "$port" -U postgres -d postgres -t 1 \
            >/dev/null 2>&1; then
            return 0
        fi
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            die "the process $pid meant to listen on $host:$port has exited"
        fi
        sleep 0.1
    done
    die "nothing answered on $host:$port within ${secs}s"
}

# ---------------------------------------------------------------------------------------------
# Throwaway PostgreSQL clusters
# ---------------------------------------------------------------------------------------------

declare -A _PG_DIRS=()
declare -A _PG_PORTS=()

# start_pg NAME PORT: initdb (trust, superuser postgres) in a fresh temp dir owned by the server
# user, start it on 127.0.0.1:PORT with fsync=off and its unix socket inside the temp dir.
start_pg() {
    local name="$1" port="$2" dir
    [[ -n "${PG_BINDIR:-}" ]] || ensure_postgres
    [[ -z "${_PG_DIRS[$name]:-}" ]] || die "cluster '$name' is already running"
    dir="$(mktemp -d "${TMPDIR:-/tmp}/evshift-pg-$name.XXXXXX")"
    _PG_DIRS[$name]="$dir"
    _PG_PORTS[$name]="$port"
    defer stop_pg "$name"
    if [[ "$(id -u)" -eq 0 ]]; then
        chown "$SERVER_USER:" "$dir"
    fi
    show_log_on_failure "$dir/server.log"
    log "starting PostgreSQL cluster '$name' on 127.0.0.1:$port ($dir)"
    # cd: the server user may not be allowed into the caller's working directory.
    (
        cd "$dir"
        as_server_user "$PG_BINDIR/initdb" -D "$dir/data" -A trust -U postgres --no-sync \
            -E UTF8 --locale=C >"$dir/initdb.log" 2>&1
    ) || {
        cat "$dir/initdb.log" >&2
        die "initdb failed for cluster '$name'"
    }
    (
        cd "$dir"
        as_server_user "$PG_BINDIR/pg_ctl" start -w -t 60 -D "$dir/data" -l "$dir/server.log" \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off \
-c max_connections=200" >/dev/null
    ) || die "cluster '$name' did not start (see $dir/server.log)"
}

# stop_pg NAME: stop the cluster and remove its directory.
stop_pg() {
    local name="$1" dir="${_PG_DIRS[$1]:-}"
    [[ -n "$dir" ]] || return 0
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        (cd "$dir" && as_server_user "$PG_BINDIR/pg_ctl" stop -D "$dir/data" -m fast -w -t 30 \
            >/dev/null 2>&1) \
            || (cd "$dir" && as_server_user "$PG_BINDIR/pg_ctl" stop -D "$dir/data" \
                -m immediate -w >/dev/null 2>&1) || true
    fi
    rm -rf "$dir"
    unset "_PG_DIRS[$name]" "_PG_PORTS[$name]"
}

pg_dir() { printf '%s\n' "${_PG_DIRS[$1]:?unknown cluster $1}"; }
pg_port() { printf '%s\n' "${_PG_PORTS[$1]:?unknown cluster $1}"; }

# psql_to HOST PORT DB [ARGS...]: psql as postgres, quiet, stopping at the first error.
psql_to() {
    local host="$1" port="$2" db="$3"
    shift 3
    "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$host" -p "$port" -U postgres -d "$db" "$@"
}

# ---------------------------------------------------------------------------------------------
# evshift
# ---------------------------------------------------------------------------------------------

# build_evshift [release|debug]: sets and exports EVSHIFT_BIN.
build_evshift() {
    local profile="${1:-release}" target_dir
    target_dir="${CARGO_TARGET_DIR:-$EVSHIFT_ROOT/target}"
    if [[ "$profile" == release ]]; then
        log "building evshift (cargo build --release -p evshift-proxy)"
        run_fg cargo build --manifest-path "$EVSHIFT_ROOT/Cargo.toml" --release -p evshift-proxy >&2 \
            || die "cargo build --release -p evshift-proxy failed"
    else
        log "building evshift (cargo build -p evshift-proxy)"
        run_fg cargo build --manifest-path "$EVSHIFT_ROOT/Cargo.toml" -p evshift-proxy >&2 \
            || die "cargo build -p evshift-proxy failed"
    fi
    EVSHIFT_BIN="$target_dir/$profile/evshift"
    [[ -x "$EVSHIFT_BIN" ]] || die "$EVSHIFT_BIN was not built"
    export EVSHIFT_BIN
}

# event_store_schema: print the path of the eventsource schema file.
event_store_schema() {
    local f="$EVSHIFT_ROOT/migrations/0001_eventsource_schema.sql"
    [[ -f "$f" ]] || die "missing $f (the eventsource event-store schema)"
    printf '%s\n' "$f"
}
