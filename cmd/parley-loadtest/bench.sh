#!/usr/bin/env bash
# bench.sh runs the scenarios behind README.md's Performance section, each
# against a fresh Parley (new data directory, new PostgreSQL database) on
# this machine, and leaves one summary (.txt) and report (.json) per run in
# OUTDIR.
#
#   go build -o /tmp/parley ./cmd/parley
#   go build -o /tmp/parley-loadtest ./cmd/parley-loadtest
#   cmd/parley-loadtest/bench.sh OUTDIR [NAME...]    # NAME as in the table below; default all
#
# PostgreSQL: the local server at postgres://postgres@127.0.0.1:5432 (trust).
# The server inherits this shell's open-file limit; idle-10000 needs about
# 10,300, so run `ulimit -n 20000` (or more) first.
set -euo pipefail
OUT=${1:?usage: bench.sh OUTDIR [NAME...]}
shift
PARLEY=${PARLEY:-/tmp/parley}
LOADTEST=${LOADTEST:-/tmp/parley-loadtest}
PORT=${PORT:-18008}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
mkdir -p "$OUT"

# name db loadtest-arguments...
BENCHES=(
  "send-8x4 sqlite --scenario send --senders 8 --rooms 4 --duration 20s --runs 3"
  "send-8x4 postgres --scenario send --senders 8 --rooms 4 --duration 20s --runs 3"
  "send-8x100 sqlite --scenario send --senders 8 --rooms 100 --duration 20s --runs 3"
  "send-8x100 postgres --scenario send --senders 8 --rooms 100 --duration 20s --runs 3"
  "fanout-100 sqlite --scenario fanout --clients 100 --rate 10 --duration 20s --runs 3"
  "fanout-100 postgres --scenario fanout --clients 100 --rate 10 --duration 20s --runs 3"
  "fanout-1000 sqlite --scenario fanout --clients 1000 --rate 10 --duration 20s --runs 3"
  "fanout-1000 postgres --scenario fanout --clients 1000 --rate 10 --duration 20s --runs 3"
  "idle-100 sqlite --scenario idle --clients 100 --room-size 100 --duration 60s --runs 1"
  "idle-1000 sqlite --scenario idle --clients 1000 --room-size 100 --duration 60s --runs 1"
  "idle-1000 postgres --scenario idle --clients 1000 --room-size 100 --duration 60s --runs 1"
  "idle-10000 sqlite --scenario idle --clients 10000 --room-size 100 --duration 60s --runs 1 --concurrency 64"
  "idle-10000 postgres --scenario idle --clients 10000 --room-size 100 --duration 60s --runs 1 --concurrency 64"
  "initialsync-50x20 sqlite --scenario initialsync --rooms 50 --messages 20 --reps 9 --runs 3"
  "initialsync-50x20 postgres --scenario initialsync --rooms 50 --messages 20 --reps 9 --runs 3"
  "joinlarge-1000 sqlite --scenario joinlarge --members 1000 --reps 5 --runs 3"
  "joinlarge-1000 postgres --scenario joinlarge --members 1000 --reps 5 --runs 3"
)

bench() {
  local name=$1 db=$2
  shift 2
  local tag="$name-$db" dir pid dbname=""
  dir=$(mktemp -d /tmp/parley-bench-data.XXXXXX)
  local env=(PARLEY_RATE_LIMITS_ENABLED=false PARLEY_ACCOUNTS_BCRYPT_COST=4 PARLEY_LOGGING_LEVEL=warn PARLEY_LISTEN_PPROF=true)
  if [ "$db" = postgres ]; then
    dbname="parley_bench_$$_${name//-/_}"
    createdb -h 127.0.0.1 -U postgres "$dbname"
    env+=("PARLEY_DATABASE_URL=$PG/$dbname?sslmode=disable")
  fi
  env "${env[@]}" "$PARLEY" run --data-dir "$dir" --listen "127.0.0.1:$PORT" --open-registration >"$OUT/$tag.server.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break
    sleep 0.1
  done
  echo "== $tag (server pid $pid): $*"
  "$LOADTEST" --hs "http://127.0.0.1:$PORT" --pid "$pid" --json "$OUT/$tag.json" --timeout 20m "$@" >"$OUT/$tag.txt" 2>"$OUT/$tag.log" || echo "   FAILED: $(tail -1 "$OUT/$tag.log")"
  cat "$OUT/$tag.txt"
  kill "$pid"
  wait "$pid" || true
  rm -rf "$dir"
  if [ -n "$dbname" ]; then dropdb -h 127.0.0.1 -U postgres "$dbname"; fi
}

for b in "${BENCHES[@]}"; do
  read -r name db args <<<"$b"
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]] && [[ " $* " != *" $name-$db "* ]]; then
    continue
  fi
  # shellcheck disable=SC2086 # args is a list of flags
  bench "$name" "$db" $args
done
