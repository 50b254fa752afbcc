#!/usr/bin/env bash
# bench/scripts/copy.sh: how fast evshift's bulk copy moves one tenant, against a raw COPY pipe.
#
#   bench/scripts/copy.sh [--no-docs]
#
# In one run: three throwaway clusters (source, target, control); the source gets the
# eventsource schema, COPY_EVENTS events of one tenant and COPY_SMALL_EVENTS of another; the
# target gets the schema with all its indexes. Then, COPY_REPEATS times, interleaved:
#   pipe     psql -c "COPY (SELECT ...) TO STDOUT (FORMAT BINARY)" |
#            psql -c "COPY events (...) FROM STDIN (FORMAT BINARY)"   (the big tenant)
#   evshift  a fresh evshift (release build) and control database; `evshift ctl migrate` of the
#            big tenant; the time from BULK_COPY to the end of the bulk pass, as the control
#            store records it (started_at .. bulk_copy_completed_at)
# and once: evshift migrating the small tenant, for its peak RSS. The target's events and
# snapshots are truncated before every run. It prints events/s (median), the ratio
# evshift/pipe and evshift's peak RSS (VmHWM) for both sizes as markdown, and writes them into
# docs/benchmarks.md between the copy markers (other sections are kept), unless --no-docs.
#
# Environment (defaults): COPY_EVENTS=1000000, COPY_SMALL_EVENTS=100000, COPY_REPEATS=2,
# COPY_BATCH=1000 (evshift's batch size).
set -euo pipefail

WRITE_DOCS=1
case "${1:-}" in
--no-docs) WRITE_DOCS=0 ;;
"") ;;
*)
    echo "usage: bench/scripts/copy.sh [--no-docs]" >&2
    exit 2
    ;;
esac

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"

COPY_EVENTS="${COPY_EVENTS:-1000000}"
COPY_SMALL_EVENTS="${COPY_SMALL_EVENTS:-100000}"
COPY_REPEATS="${COPY_REPEATS:-2}"
COPY_BATCH="${COPY_BATCH:-1000}"
BIG_TENANT="00000000-0000-4000-8000-000000000001"
SMALL_TENANT="00000000-0000-4000-8000-000000000002"
COLUMNS="event_id, aggregate_id, aggregate_type, event_type, tenant_id, actor_id, version, \
timestamp, payload, created_at"
DOCS="$EVSHIFT_ROOT/docs/benchmarks.md"

ensure_postgres
build_evshift release
LOAD_BEFORE="$(cut -d' ' -f1 /proc/loadavg)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/evshift-copy.XXXXXX")"
defer rm -rf "$WORK"

start_pg source "$(free_port)"
start_pg target "$(free_port)"
start_pg control "$(free_port)"
SOURCE_PORT="$(pg_port source)"
TARGET_PORT="$(pg_port target)"
CONTROL_PORT="$(pg_port control)"
psql_src() { psql_to 127.0.0.1 "$SOURCE_PORT" postgres "$@"; }
psql_tgt() { psql_to 127.0.0.1 "$TARGET_PORT" postgres "$@"; }
psql_ctl() { psql_to 127.0.0.1 "$CONTROL_PORT" postgres "$@"; }
psql_src -f "$(event_store_schema)"
psql_tgt -f "$(event_store_schema)"

# seed TENANT N: N events of TENANT in streams of 10, as the test harness seeds them.
seed() {
    psql_src -c "
        INSERT INTO events (event_id, aggregate_id, aggregate_type, event_type, tenant_id,
                            actor_id, version, timestamp, payload, created_at)
        SELECT md5('$1/event/' || n)::uuid, md5('$1/order/' || n / 10)::uuid, 'Order',
               CASE WHEN n % 10 = 0 THEN 'OrderCreated' ELSE 'ItemAdded' END, '$1',
               'user-' || (n % 13), n % 10 + 1,
               timestamptz '2024-01-01 00:00:00+00' + make_interval(secs => n),
               jsonb_build_object('order_no', n / 10, 'sku', 'SKU-' || (n::bigint * 7919 % 1000),
                                  'quantity', 1 + n % 5, 'note', repeat('x', n % 16)),
               timestamptz '2024-01-01 00:00:00.005+00' + make_interval(secs => n)
          FROM generate_series(0, $2 - 1) AS g(n)"
}
log "seeding $COPY_EVENTS + $COPY_SMALL_EVENTS events"
seed "$BIG_TENANT" "$COPY_EVENTS"
seed "$SMALL_TENANT" "$COPY_SMALL_EVENTS"
psql_src -c "VACUUM ANALYZE events"

# cluster_ticks NAME: CPU clock ticks of the cluster's postmaster and its reaped children
# (every backend that served a connection and exited).
cluster_ticks() {
    local pid
    pid="$(head -1 "$(pg_dir "$1")/data/postmaster.pid")"
    awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat"
}
TICKS="$(getconf CLK_TCK)"
# clusters_ticks NAME...: the sum over clusters.
clusters_ticks() {
    local total=0 name
    for name in "$@"; do total=$((total + $(cluster_ticks "$name"))); done
    echo "$total"
}
seconds_of() { printf '%.1f' "$(echo "$1 / $TICKS" | bc -l)"; }

reset_target() {
    psql_tgt -c "TRUNCATE events, snapshots" -c "CHECKPOINT"
    psql_src -c "CHECKPOINT"
}

# pipe_run: seconds for the raw pipe of the big tenant.
pipe_run() {
    reset_target
    local start end before clients s0
    before="$(clusters_ticks source target)"
    s0="$(cluster_ticks source)"
    clients="$(awk '{print $16 + $17}' /proc/$$/stat)"
    start="$(date +%s.%N)"
    "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$SOURCE_PORT" -U postgres \
        -d postgres -c "COPY (SELECT $COLUMNS FROM events WHERE tenant_id = '$BIG_TENANT'
                              ORDER BY global_position) TO STDOUT (FORMAT BINARY)" |
        "$PG_BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$TARGET_PORT" -U postgres \
            -d postgres -c "COPY events ($COLUMNS) FROM STDIN (FORMAT BINARY)"
    end="$(date +%s.%N)"
    # The servers' ticks once their backends exited, plus both psql processes (reaped
    # children of this shell).
    sleep 1
    log "pipe: CPU ticks: source $(($(cluster_ticks source) - s0)), target and psql $(($(clusters_ticks source target) - before - $(cluster_ticks source) + s0 + $(awk '{print $16 + $17}' /proc/$$/stat) - clients))"
    PIPE_CPU+=("$(($(clusters_ticks source target) - before + $(awk '{print $16 + $17}' /proc/$$/stat) - clients))")
    local copied
    copied="$(psql_tgt -At -c "SELECT count(*) FROM events")"
    [[ "$copied" == "$COPY_EVENTS" ]] || die "the pipe copied $copied events"
    echo "$end - $start" | bc -l
}

# evshift_run RUN TENANT EVENTS: prints "SECONDS PEAK_RSS_KB" for a migration of TENANT.
evshift_run() {
    local run="$1" tenant="$2" events="$3" db="control_$1" port socket config pid
    reset_target
    psql_ctl -c "CREATE DATABASE $db"
    port="$(free_port)"
    socket="$WORK/evshift-$run.sock"
    config="$WORK/evshift-$run.toml"
    cat >"$config" <<EOF
listen = "127.0.0.1:$port"
control_socket = "$socket"

[control]
url = "postgres://postgres@127.0.0.1:$CONTROL_PORT/$db"

[[stores]]
id = "source"
url = "postgres://postgres@127.0.0.1:$SOURCE_PORT/postgres"
default = true

[[stores]]
id = "target"
url = "postgres://postgres@127.0.0.1:$TARGET_PORT/postgres"

[migration]
batch_size = $COPY_BATCH

[log]
level = "warn"
EOF
    start_bg "$WORK/evshift-$run.log" "$EVSHIFT_BIN" serve --config "$config"
    pid="$BG_PID"
    wait_for_pg 127.0.0.1 "$port" 30 "$pid"
    local before s0 t0 c0
    before="$(clusters_ticks source target control)"
    s0="$(cluster_ticks source)"
    t0="$(cluster_ticks target)"
    c0="$(cluster_ticks control)"
    "$EVSHIFT_BIN" ctl --socket "$socket" migrate "$tenant" --to target >&2
    "$EVSHIFT_BIN" ctl --socket "$socket" watch "$tenant" --until DUAL_WRITE --interval-ms 200 \
        >/dev/null
    local rss seconds copied
    rss="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")"
    local own
    own="$(awk '{print $14 + $15}' "/proc/$pid/stat")"
    seconds="$(psql_to 127.0.0.1 "$CONTROL_PORT" "$db" -At -c \
        "SELECT extract(epoch FROM bulk_copy_completed_at - started_at) FROM tenant_migrations")"
    copied="$(psql_tgt -At -c "SELECT count(*) FROM events")"
    [[ "$copied" == "$events" ]] || die "evshift copied $copied events, expected $events"
    stop_pid "$pid"
    # Once evshift's backends exited, the servers' ticks include them.
    sleep 1
    log "evshift run $run: CPU ticks: source $(($(cluster_ticks source) - s0)), target $(($(cluster_ticks target) - t0)), control $(($(cluster_ticks control) - c0)), evshift $own"
    echo "$seconds $rss $(($(clusters_ticks source target control) - before + own))"
}

median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

PIPE_TIMES=()
PIPE_CPU=()
EVSHIFT_TIMES=()
EVSHIFT_CPU=()
BIG_RSS=0
for ((r = 1; r <= COPY_REPEATS; r++)); do
    log "run $r/$COPY_REPEATS: raw pipe"
    # Not in a subshell: pipe_run records its CPU in PIPE_CPU.
    pipe_run >"$WORK/pipe.out"
    PIPE_TIMES+=("$(cat "$WORK/pipe.out")")
    log "run $r/$COPY_REPEATS: evshift"
    read -r seconds rss cpu < <(evshift_run "big$r" "$BIG_TENANT" "$COPY_EVENTS")
    EVSHIFT_TIMES+=("$seconds")
    EVSHIFT_CPU+=("$cpu")
    ((rss > BIG_RSS)) && BIG_RSS="$rss"
    log "run $r: pipe ${PIPE_TIMES[-1]} s ($(seconds_of "${PIPE_CPU[-1]}") CPU s), evshift $seconds s ($(seconds_of "$cpu") CPU s), peak RSS $rss kB"
done
log "evshift: $COPY_SMALL_EVENTS events (for the peak RSS)"
read -r small_seconds SMALL_RSS _ < <(evshift_run small "$SMALL_TENANT" "$COPY_SMALL_EVENTS")

PIPE_MEDIAN="$(printf '%s\n' "${PIPE_TIMES[@]}" | median)"
EVSHIFT_MEDIAN="$(printf '%s\n' "${EVSHIFT_TIMES[@]}" | median)"
rate() { printf '%.0f' "$(echo "$COPY_EVENTS / $1" | bc -l)"; }
PIPE_RATE="$(rate "$PIPE_MEDIAN")"
EVSHIFT_RATE="$(rate "$EVSHIFT_MEDIAN")"
RATIO="$(printf '%.2f' "$(echo "$EVSHIFT_RATE / $PIPE_RATE" | bc -l)")"
SMALL_RATE="$(printf '%.0f' "$(echo "$COPY_SMALL_EVENTS / $small_seconds" | bc -l)")"
mb() { printf '%.1f' "$(echo "$1 / 1024" | bc -l)"; }
PIPE_CPU_MEDIAN="$(printf '%s\n' "${PIPE_CPU[@]}" | median)"
EVSHIFT_CPU_MEDIAN="$(printf '%s\n' "${EVSHIFT_CPU[@]}" | median)"
CPU_RATIO="$(printf '%.2f' "$(echo "$EVSHIFT_CPU_MEDIAN / $PIPE_CPU_MEDIAN" | bc -l)")"
cpu_list() { local t out=""; for t in "$@"; do out+="$(seconds_of "$t") "; done; echo "${out% }"; }

LOAD_AFTER="$(cut -d' ' -f1 /proc/loadavg)"
COMMIT="$(git -C "$EVSHIFT_ROOT" rev-parse --short HEAD)"
DIRTY=""
if ! git -C "$EVSHIFT_ROOT" diff --quiet HEAD -- control proxy; then
    DIRTY=" plus uncommitted changes to control/ or proxy/"
fi
SECTION="$WORK/section.md"
cat >"$SECTION" <<EOF
<!-- BEGIN copy: generated by bench/scripts/copy.sh, do not edit by hand -->
## Bulk copy (one tenant, source to target)

How fast the migration's bulk pass copies one tenant's events into an indexed target, against
the raw single-stream pipe \`psql -c "COPY (SELECT ...) TO STDOUT (FORMAT BINARY)" | psql -c
"COPY events (...) FROM STDIN (FORMAT BINARY)"\` on the same data, into the same target (all
indexes of the eventsource schema; truncated before every run), in the same run, interleaved.
evshift's time is the bulk pass as the control store records it (\`started_at\` to
\`bulk_copy_completed_at\`: counting, copying in batches of $COPY_BATCH with a checkpoint and
the position mappings per batch, snapshots). Peak RSS is evshift's \`VmHWM\` after the pass.

- Command: \`COPY_EVENTS=$COPY_EVENTS COPY_SMALL_EVENTS=$COPY_SMALL_EVENTS COPY_REPEATS=$COPY_REPEATS COPY_BATCH=$COPY_BATCH bench/scripts/copy.sh\`
- Date: $(date -u '+%Y-%m-%d %H:%M UTC'); evshift release build of commit $COMMIT$DIRTY
- Machine: \`nproc\` = $(nproc), $(free -g | awk '/^Mem:/ {print $2}') GiB, \`uname -r\` = $(uname -r); source, target, control store, evshift and psql share the machine; load average $LOAD_BEFORE before the run, $LOAD_AFTER after it (other work on the machine slows both sides alike: the runs are interleaved)
- PostgreSQL: $("$PG_BINDIR/postgres" --version | sed 's/^postgres (PostgreSQL) //'), fsync = off, throwaway clusters

| copy of $COPY_EVENTS events | seconds (median of $COPY_REPEATS) | events/s | vs pipe | CPU seconds (median) | CPU vs pipe |
|---|---:|---:|---:|---:|---:|
| raw pipe (psql COPY BINARY \\| psql COPY FROM) | $(printf '%.1f' "$PIPE_MEDIAN") | $PIPE_RATE | 1.00 | $(seconds_of "$PIPE_CPU_MEDIAN") | 1.00 |
| evshift bulk copy | $(printf '%.1f' "$EVSHIFT_MEDIAN") | $EVSHIFT_RATE | $RATIO | $(seconds_of "$EVSHIFT_CPU_MEDIAN") | $CPU_RATIO |

CPU seconds: everything each side burns, whatever else runs on the machine: for the pipe the
source and target servers and both psql processes; for evshift the source, target and control
servers and evshift itself.

Every run (seconds): pipe ${PIPE_TIMES[*]}; evshift ${EVSHIFT_TIMES[*]}. CPU seconds: pipe
$(cpu_list "${PIPE_CPU[@]}"); evshift $(cpu_list "${EVSHIFT_CPU[@]}").

| evshift peak RSS | $COPY_SMALL_EVENTS events | $COPY_EVENTS events |
|---|---:|---:|
| VmHWM | $(mb "$SMALL_RSS") MB | $(mb "$BIG_RSS") MB |

($COPY_SMALL_EVENTS events copied at $SMALL_RATE events/s.)
<!-- END copy -->
EOF
cat "$SECTION"

if ((WRITE_DOCS)); then
    touch "$DOCS"
    if grep -q '^<!-- BEGIN copy' "$DOCS"; then
        awk -v section="$SECTION" '
            /^<!-- BEGIN copy/ { while ((getline line < section) > 0) print line; skip = 1; next }
            /^<!-- END copy -->/ { skip = 0; next }
            !skip { print }' "$DOCS" >"$DOCS.tmp"
        mv "$DOCS.tmp" "$DOCS"
    else
        { printf '\n'; cat "$SECTION"; } >>"$DOCS"
    fi
    log "wrote the copy section of $DOCS"
fi
