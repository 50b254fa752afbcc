#!/usr/bin/env bash
# bench/scripts/routed.sh [--no-docs] [ARGS...]: 8 tenants over 2 stores through evshift vs evshift with one store vs the store directly.
# A thin wrapper of `evshift-bench routed` (see bench/scripts/run_scenario.sh and
# `evshift-bench routed --help`); writes its section of docs/benchmarks.md unless --no-docs.
exec "$(dirname "${BASH_SOURCE[0]}")/run_scenario.sh" routed "$@"
