#!/usr/bin/env bash
# federation-bench.sh runs the loadtest's federation scenario against two
# fresh Parleys that federate with each other on this machine: a throwaway
# CA (openssl), a certificate per server from `parley generate-tls-cert`,
# and server names 127.0.0.1:PORT (an IP literal with a port resolves to
# itself, server-server spec §"Resolving server names", so no DNS or
# .well-known is involved). Messages are sent on the first server and
# received by clients long-polling on the second. It leaves a summary
# (.txt), a report (.json) and both servers' logs in OUTDIR.
#
#   go build -o /tmp/parley ./cmd/parley
#   go build -o /tmp/parley-loadtest ./cmd/parley-loadtest
#   cmd/parley-loadtest/federation-bench.sh OUTDIR [sqlite|postgres] [loadtest flags...]
#
# The default flags are "--clients 10 --rate 50 --duration 20s --runs 3
# --concurrency 1". Set-up requests go one at a time because, measured on
# commit d676e2c, concurrent ones hit two server bugs that fail a run
# rather than slow it: on SQLite, 8+ concurrent writes (filter uploads) on
# the receiving server fill its connection pool while the sync API's
# consumer, holding the write lock, waits for a pool connection to read
# push rules (a 30 s stall, then 500s); on PostgreSQL, concurrent first
# joins of a remote room fail with a duplicate key on
# roomserver_events_event_id_key.
# --pid samples the sending server (the one doing outbound delivery).
# PostgreSQL: the local server at postgres://postgres@127.0.0.1:5432 (trust),
# one fresh database per Parley, dropped afterwards.
set -euo pipefail
OUT=${1:?usage: federation-bench.sh OUTDIR [sqlite|postgres] [loadtest flags...]}
DB=${2:-sqlite}
shift $(($# >= 2 ? 2 : 1))
FLAGS=("$@")
if [ ${#FLAGS[@]} -eq 0 ]; then
  FLAGS=(--clients 10 --rate 50 --duration 20s --runs 3 --concurrency 1)
fi
PARLEY=${PARLEY:-/tmp/parley}
LOADTEST=${LOADTEST:-/tmp/parley-loadtest}
PORT=${PORT:-18008}          # client API ports PORT and PORT+1
FEDPORT=${FEDPORT:-18448}    # federation ports FEDPORT and FEDPORT+1
PG=${PG:-postgres://postgres@127.0.0.1:5432}
mkdir -p "$OUT"
TAG="federation-$DB"

WORK=$(mktemp -d /tmp/parley-fedbench.XXXXXX)
PIDS=()
DBS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for db in "${DBS[@]}"; do dropdb -h 127.0.0.1 -U postgres "$db" || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=Parley federation bench CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,digitalSignature" \
  -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null

# start_server N: a Parley with client API on PORT+N and federation on
# FEDPORT+N, named 127.0.0.1:FEDPORT+N.
start_server() {
  local n=$1 dir="$WORK/hs$1" name="127.0.0.1:$((FEDPORT + $1))"
  mkdir -p "$dir"
  "$PARLEY" generate-tls-cert --ca-cert "$WORK/ca.pem" --ca-key "$WORK/ca.key" --name "$name" \
    --cert-out "$dir/tls.crt" --key-out "$dir/tls.key"
  local env=(PARLEY_RATE_LIMITS_ENABLED=false PARLEY_ACCOUNTS_BCRYPT_COST=4 PARLEY_LOGGING_LEVEL=warn PARLEY_LISTEN_PPROF=true
    PARLEY_FEDERATION_ENABLED=true PARLEY_LISTEN_FEDERATION="$name"
    PARLEY_TLS_CERTIFICATE="$dir/tls.crt" PARLEY_TLS_KEY="$dir/tls.key"
    PARLEY_FEDERATION_TRUSTED_CA_FILE="$WORK/ca.pem")
  if [ "$DB" = postgres ]; then
    local dbname="parley_fedbench_$$_$n"
    createdb -h 127.0.0.1 -U postgres "$dbname"
    DBS+=("$dbname")
    env+=("PARLEY_DATABASE_URL=$PG/$dbname?sslmode=disable")
  fi
  env "${env[@]}" "$PARLEY" run --data-dir "$dir" --listen "127.0.0.1:$((PORT + n))" --server-name "$name" \
    --open-registration >"$OUT/$TAG.hs$n.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$((PORT + n))/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "server $n did not start; see $OUT/$TAG.hs$n.log" >&2
  return 1
}

start_server 0
start_server 1
echo "== $TAG (sender's server pid ${PIDS[0]}): ${FLAGS[*]}"
"$LOADTEST" --hs "http://127.0.0.1:$PORT" --hs2 "http://127.0.0.1:$((PORT + 1))" --pid "${PIDS[0]}" \
  --scenario federation --json "$OUT/$TAG.json" --timeout 20m "${FLAGS[@]}" >"$OUT/$TAG.txt" 2>"$OUT/$TAG.log" ||
  echo "   FAILED: $(tail -1 "$OUT/$TAG.log")"
cat "$OUT/$TAG.txt"
