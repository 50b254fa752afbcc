#!/usr/bin/env bash
# bench/scripts/passthrough.sh [--no-docs] [ARGS...]: what evshift costs in front of one store: direct vs evshift vs PgBouncer (transaction mode), append and read, each protocol.
# A thin wrapper of `evshift-bench passthrough` (see bench/scripts/run_scenario.sh and
# `evshift-bench passthrough --help`); writes its section of docs/benchmarks.md unless --no-docs.
exec "$(dirname "${BASH_SOURCE[0]}")/run_scenario.sh" passthrough "$@"
