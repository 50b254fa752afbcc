#!/usr/bin/env bash
# bench/scripts/all.sh [--no-docs] [ARGS...]: every scenario in turn; needs --out DIR (JSON, markdown and figures per scenario).
# A thin wrapper of `evshift-bench all` (see bench/scripts/run_scenario.sh and
# `evshift-bench all --help`); writes its section of docs/benchmarks.md unless --no-docs.
exec "$(dirname "${BASH_SOURCE[0]}")/run_scenario.sh" all "$@"
