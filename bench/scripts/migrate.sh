#!/usr/bin/env bash
# bench/scripts/migrate.sh [--no-docs] [ARGS...]: one tenant at 1,200 appends/s migrated back and forth 20 times under load; dual-write latency, cutover pauses, the other tenants around the cutovers.
# A thin wrapper of `evshift-bench migrate` (see bench/scripts/run_scenario.sh and
# `evshift-bench migrate --help`); writes its section of docs/benchmarks.md unless --no-docs.
exec "$(dirname "${BASH_SOURCE[0]}")/run_scenario.sh" migrate "$@"
