#!/usr/bin/env bash
# Routed workloads: what tenant routing costs on top of the plain relay.
#
# In one run, with 8 tenants and the same client load (evshift-bench, tokio-postgres, prepared
# statements, 16 clients):
#   direct       the shared store directly (all 8 tenants on it);
#   passthrough  evshift with the shared store only (every tenant on the default store);
#   routed       evshift with two stores, 4 tenants assigned to the dedicated store.
# Workloads: the eventsource append transaction and the stream read. Each target has its own
# fresh databases; runs are interleaved and repeated; medians are reported. Also reports the
# classifier's parse-cache hit rate in the routed runs (from /metrics).
#
#   bench/scripts/routed.sh [--no-docs]
# Environment: BENCH_DURATION (s, default 10), BENCH_REPEATS (3), BENCH_CLIENTS (16).
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib.sh"

DURATION="${BENCH_DURATION:-10}"
REPEATS="${BENCH_REPEATS:-3}"
CLIENTS="${BENCH_CLIENTS:-16}"
TENANTS=8
WRITE_DOCS=1
for arg in "$@"; do
    case "$arg" in
        --no-docs) WRITE_DOCS=0 ;;
        *) echo "usage: bench/scripts/routed.sh [--no-docs]" >&2; exit 2 ;;
    esac
done

WORK="$(mktemp -d "${TMPDIR:-/tmp}/evshift-routed.XXXXXX")"
defer rm -rf "$WORK"

ensure_postgres
build_evshift release
log "building evshift-bench (cargo build --release -p evshift-bench)"
run_fg cargo build --manifest-path "$EVSHIFT_ROOT/Cargo.toml" --release -p evshift-bench >&2
BENCH_BIN="${CARGO_TARGET_DIR:-$EVSHIFT_ROOT/target}/release/evshift-bench"

SHARED_PORT="$(free_port)"; DEDICATED_PORT="$(free_port)"; CONTROL_PORT="$(free_port)"
start_pg shared "$SHARED_PORT"
start_pg dedicated "$DEDICATED_PORT"
start_pg control "$CONTROL_PORT"
SCHEMA="$(event_store_schema)"

# fresh_db PORT NAME: a new database with the event-store schema.
fresh_db() {
    psql_to 127.0.0.1 "$1" postgres -c "DROP DATABASE IF EXISTS $2" -c "CREATE DATABASE $2" >/dev/null
    psql_to 127.0.0.1 "$1" "$2" -f "$SCHEMA" >/dev/null
}

# start_evshift NAME ROUTED DB: evshift on a free port; ROUTED=1 adds the dedicated store and
# the control store. Sets PROXY_PORT, METRICS_PORT, SOCKET, PROXY_PID.
start_evshift() {
    local name="$1" routed="$2" db="$3" config="$WORK/$1.toml"
    PROXY_PORT="$(free_port)"; METRICS_PORT="$(free_port)"; SOCKET="$WORK/$1.sock"
    {
        echo "listen = \"127.0.0.1:$PROXY_PORT\""
        echo "control_socket = \"$SOCKET\""
        echo "metrics_listen = \"127.0.0.1:$METRICS_PORT\""
        echo "[log]"
        echo "level = \"warn\""
        if [[ "$routed" == 1 ]]; then
            echo "[control]"
            echo "url = \"postgres://postgres@127.0.0.1:$CONTROL_PORT/$db\""
        fi
        echo "[[stores]]"
        echo "id = \"shared\""
        echo "url = \"postgres://postgres@127.0.0.1:$SHARED_PORT/$db\""
        echo "default = true"
        if [[ "$routed" == 1 ]]; then
            echo "[[stores]]"
            echo "id = \"dedicated\""
            echo "url = \"postgres://postgres@127.0.0.1:$DEDICATED_PORT/$db\""
        fi
    } >"$config"
    start_bg "$WORK/$name.log" "$EVSHIFT_BIN" serve --config "$config"
    PROXY_PID="$BG_PID"
    wait_for_pg 127.0.0.1 "$PROXY_PORT" 30 "$PROXY_PID"
}

# tenant N: the uuid evshift-bench uses for tenant N (0-based).
tenant() { printf '0e750000-0000-0000-0000-%012x\n' "$(($1 + 1))"; }

# load URL WORKLOAD LABEL: one measured run; prints its JSON line.
load() {
    run_fg "$BENCH_BIN" load --url "$1" --workload "$2" --clients "$CLIENTS" --tenants "$TENANTS" \
        --duration "$DURATION" --json --label "$3" ${4:+--seed-aggregates "$4"}
}

RESULTS="$WORK/results.jsonl"
: >"$RESULTS"
for ((r = 1; r <= REPEATS; r++)); do
    for target in direct passthrough routed; do
        db="bench_${target}_$r"
        fresh_db "$SHARED_PORT" "$db"
        fresh_db "$DEDICATED_PORT" "$db"
        psql_to 127.0.0.1 "$CONTROL_PORT" postgres -c "DROP DATABASE IF EXISTS $db" \
            -c "CREATE DATABASE $db" >/dev/null
        case "$target" in
            direct) url="postgres://postgres@127.0.0.1:$SHARED_PORT/$db" ;;
            passthrough) start_evshift "$target-$r" 0 "$db"; url="postgres://app@127.0.0.1:$PROXY_PORT/$db" ;;
            routed)
                start_evshift "$target-$r" 1 "$db"
                url="postgres://app@127.0.0.1:$PROXY_PORT/$db"
                for ((t = 0; t < TENANTS; t += 2)); do
                    "$EVSHIFT_BIN" ctl --socket "$SOCKET" assign "$(tenant "$t")" dedicated >/dev/null
                done
                ;;
        esac
        log "run $r/$REPEATS: $target"
        load "$url" read-stream "$target" 200 >>"$RESULTS"
        load "$url" append "$target" >>"$RESULTS"
        if [[ "$target" == routed ]]; then
            curl -s "http://127.0.0.1:$METRICS_PORT/metrics" \
                | awk -v r="$r" '/^evshift_parse_cache_(hits|misses)_total /{ print r, $1, $2 }' \
                >>"$WORK/cache.txt" || true
        fi
        if [[ "$target" != direct ]]; then
            stop_pid "$PROXY_PID"
        fi
    done
done

# median WORKLOAD LABEL FIELD
median() {
    python3 - "$RESULTS" "$1" "$2" "$3" <<'PY'
import json, statistics, sys
path, workload, label, field = sys.argv[1:]
values = []
for line in open(path):
    r = json.loads(line)
    if r["workload"] == workload and r["label"] == label:
        v = r
        for part in field.split("."):
            v = v[part]
        values.append(v)
print(statistics.median(values))
PY
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

TABLE="$WORK/table.md"
{
    echo "| workload | direct tps | passthrough tps | routed tps | routed / passthrough | routed / direct | p99 direct | p99 passthrough | p99 routed |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for workload in append read_stream; do
        d="$(median "$workload" direct tps)"; p="$(median "$workload" passthrough tps)"; r="$(median "$workload" routed tps)"
        d99="$(median "$workload" direct latency_us.p99)"; p99="$(median "$workload" passthrough latency_us.p99)"; r99="$(median "$workload" routed latency_us.p99)"
        printf '| %s | %.0f | %.0f | %.0f | %s | %s | %.0f µs | %.0f µs | %.0f µs |\n' \
            "$workload" "$d" "$p" "$r" "$(ratio "$r" "$p")" "$(ratio "$r" "$d")" "$d99" "$p99" "$r99"
    done
} >"$TABLE"
HITS="$(awk '$2=="evshift_parse_cache_hits_total"{h+=$3} END{print h+0}' "$WORK/cache.txt" 2>/dev/null || echo 0)"
MISSES="$(awk '$2=="evshift_parse_cache_misses_total"{m+=$3} END{print m+0}' "$WORK/cache.txt" 2>/dev/null || echo 0)"
cat "$TABLE"
echo "parse cache in the routed runs: $HITS hits, $MISSES misses"
cp "$RESULTS" "${BENCH_RESULTS_OUT:-/dev/null}" 2>/dev/null || true

if [[ "$WRITE_DOCS" == 1 ]]; then
    section="$WORK/section.md"
    {
        echo "<!-- BEGIN routed: generated by bench/scripts/routed.sh, do not edit by hand -->"
        echo "## Routed (8 tenants over 2 stores)"
        echo
        echo "What tenant routing costs. The same closed-loop load (\`evshift-bench load\`: tokio-postgres,"
        echo "prepared statements, $CLIENTS clients, $TENANTS tenants, client *c* works for tenant *c* mod 8)"
        echo "against: the shared store directly; evshift with the shared store only (passthrough: every"
        echo "tenant on the default store, but every statement still classified and resolved); evshift with"
        echo "two stores and 4 tenants assigned to the dedicated store (routed). \`append\` is the eventsource"
        echo "append transaction (BEGIN, version read, INSERT ... RETURNING, COMMIT) on per-client aggregates;"
        echo "\`read_stream\` reads one of 200 seeded 10-event streams of the client's tenant. Medians of"
        echo "$REPEATS interleaved runs of ${DURATION} s, each on fresh databases."
        echo
        echo "- Command: \`BENCH_DURATION=$DURATION BENCH_REPEATS=$REPEATS BENCH_CLIENTS=$CLIENTS bench/scripts/routed.sh\`"
        echo "- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); evshift release build of commit $(git -C "$EVSHIFT_ROOT" rev-parse --short HEAD)"
        echo "- Machine: \`nproc\` = $(nproc), $(free -g | awk '/Mem:/{print $2}') GiB, \`uname -r\` = $(uname -r); clients, both PostgreSQL servers and evshift share the same cores"
        echo
        cat "$TABLE"
        echo
        echo "Parse cache over the routed runs: $HITS hits, $MISSES misses (prepared statements are classified once per connection at Parse; Binds reuse the classification)."
        echo
        echo "The routed append pays one directory lookup per new aggregate (the version read names only the"
        echo "aggregate; an aggregate found in no store is new and runs on the default store without pinning"
        echo "the transaction), and the routed configuration splits the same cores over two PostgreSQL servers."
        echo "<!-- END routed -->"
    } >"$section"
    python3 - "$EVSHIFT_ROOT/docs/benchmarks.md" "$section" routed <<'PY'
import re, sys
path, section_path, name = sys.argv[1:]
section = open(section_path).read().rstrip("\n")
try:
    doc = open(path).read()
except FileNotFoundError:
    doc = "# Benchmarks\n"
pattern = re.compile(r"<!-- BEGIN %s:.*?<!-- END %s -->" % (name, name), re.S)
doc = pattern.sub(lambda _: section, doc) if pattern.search(doc) else doc.rstrip("\n") + "\n\n" + section + "\n"
open(path, "w").write(doc)
PY
    log "wrote the routed section of docs/benchmarks.md"
fi
