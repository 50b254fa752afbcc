#!/usr/bin/env bash
# bench/scripts/copy.sh [--no-docs] [ARGS...]: evshift's bulk copy of one tenant (1M events) vs the raw COPY TO STDOUT | COPY FROM STDIN pipe; peak RSS at 100k and 1M.
# A thin wrapper of `evshift-bench copy` (see bench/scripts/run_scenario.sh and
# `evshift-bench copy --help`); writes its section of docs/benchmarks.md unless --no-docs.
exec "$(dirname "${BASH_SOURCE[0]}")/run_scenario.sh" copy "$@"
