#!/usr/bin/env bash
# bench/scripts/run_scenario.sh SCENARIO [--no-docs] [ARGS...]: build evshift and evshift-bench
# (release), then run `evshift-bench SCENARIO --docs ARGS...`, which starts its own throwaway
# clusters, prints markdown tables and writes its section of docs/benchmarks.md and its figures
# into docs/img/ (not with --no-docs). The per-scenario scripts beside this one call it; see
# `evshift-bench SCENARIO --help` for the options.
# Installs the PostgreSQL server packages (and pgbouncer for passthrough and all) with apt-get
# if they are missing.
set -euo pipefail

SCENARIO="${1:?usage: bench/scripts/run_scenario.sh SCENARIO [--no-docs] [ARGS...]}"
shift
DOCS=(--docs)
ARGS=()
for arg in "$@"; do
    if [[ "$arg" == --no-docs ]]; then
        DOCS=()
    else
        ARGS+=("$arg")
    fi
done

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

ensure_postgres
case "$SCENARIO" in
passthrough | all) ensure_pgbouncer ;;
esac
build_evshift release
log "building evshift-bench (cargo build --release -p evshift-bench)"
run_fg cargo build --manifest-path "$EVSHIFT_ROOT/Cargo.toml" --release -p evshift-bench >&2 \
    || die "cargo build --release -p evshift-bench failed"
BENCH_BIN="${CARGO_TARGET_DIR:-$EVSHIFT_ROOT/target}/release/evshift-bench"

EVSHIFT_BENCH_COMMAND="bench/scripts/$SCENARIO.sh${ARGS[*]:+ ${ARGS[*]}}"
export EVSHIFT_BENCH_COMMAND EVSHIFT_BIN
exec "$BENCH_BIN" "$SCENARIO" "${DOCS[@]}" "${ARGS[@]}"
