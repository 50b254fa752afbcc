#!/usr/bin/env bash
# bench/scripts/scale.sh [--no-docs] [ARGS...]: evshift's tps and RSS at 10, 100 and 1,000 client connections; copy rate at 100k, 1M and 10M events.
# A thin wrapper of `evshift-bench scale` (see bench/scripts/run_scenario.sh and
# `evshift-bench scale --help`); writes its section of docs/benchmarks.md unless --no-docs.
exec "$(dirname "${BASH_SOURCE[0]}")/run_scenario.sh" scale "$@"
