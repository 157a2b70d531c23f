#!/usr/bin/env bash
# Benchmark (not a test): http_server -> blackhole under 16 keep-alive clients (wrk), with
# batches of 100 Windows agent events per POST (~37 KiB) and with 1 event per POST.
# Prints events/s, requests/s, p50/p99 latency, the server's peak RSS and CPU, and the
# machine's own baseline from the same run: wrk against the pipeline's GET /health (the
# cheapest HTTP answer this binary gives, with the same connections and client).
#
#   bench/http_server.sh            (DURATION=20 CONNS=16 THREADS=2 ACK=true to change)
# Needs: wrk (apt-get install wrk), python3. Inputs are generated into bench/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=$ROOT/bench/out
SHARED=${SESSIONTRAIL_SHARED:-$ROOT/../shared}
DURATION=${DURATION:-20}
CONNS=${CONNS:-16}
THREADS=${THREADS:-2}
ACK=${ACK:-true}
TOKEN=bench-agent-token-0123456789abcdef
mkdir -p "$OUT"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }

# SESSIONTRAIL_BIN=target/debug/sessiontrail skips the (long) release build.
if [ -z "${SESSIONTRAIL_BIN:-}" ]; then
  cargo build --release --quiet
fi
BIN=${SESSIONTRAIL_BIN:-$ROOT/target/release/sessiontrail}

python3 "$SHARED/bench/gen_sessions.py" --count 100 --seed 7 --sessions 20 --format windows \
  --bad-fraction 0 --secret-fraction 0 --out "$OUT/http_events.ndjson" >/dev/null
python3 - "$OUT" <<'PY'
import sys
out = sys.argv[1]
lines = [l for l in open(f"{out}/http_events.ndjson", encoding="utf-8").read().splitlines() if l.strip()]
open(f"{out}/http_batch100.json", "w", encoding="utf-8").write("[" + ",".join(lines[:100]) + "]")
open(f"{out}/http_single.json", "w", encoding="utf-8").write(lines[0])
PY

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port); API_PORT=$(free_port)
cat > "$OUT/http_bench.yaml" <<YAML
data_dir: $OUT/http_data
api:
  address: 127.0.0.1:$API_PORT
sources:
  agents:
    type: http_server
    address: 127.0.0.1:$PORT
    acknowledgements: $ACK
    auth:
      bearer_tokens: ["$TOKEN"]
sinks:
  discard:
    type: blackhole
    inputs: [agents]
YAML
"$BIN" run -c "$OUT/http_bench.yaml" 2>"$OUT/http_bench.log" &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$API_PORT/health" && break
  sleep 0.1
done

TICKS=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

run() { # label, events per request, body file, url[, method]
  local label=$1 per=$2 body=$3 url=$4 method=${5:-POST} before after result
  before=$(cpu_ticks)
  result=$(METHOD=$method BODY_FILE=$body TOKEN=$TOKEN wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency \
    -s "$ROOT/bench/http_server.lua" "$url" | grep '^{')
  after=$(cpu_ticks)
  python3 - "$label" "$per" "$result" "$before" "$after" "$TICKS" "$(stat -c %s "$body")" <<'PY'
import json, sys
label, per, result, before, after, ticks, size = sys.argv[1:]
r = json.loads(result)
per = int(per)
cpu = (int(after) - int(before)) / int(ticks) / r["seconds"] * 100
ok = r["requests"] - r["failed"]
print(f"{label:28s} {r['requests_per_s']:>10,.0f} req/s {r['requests_per_s']*per:>11,.0f} events/s "
      f"{r['requests_per_s']*int(size)/2**20:>7.1f} MiB/s  p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
      f"server CPU {cpu:.0f}%  failed {r['failed']}")
PY
}

echo "binary: $BIN"
echo "http_server -> blackhole, $CONNS keep-alive connections, $THREADS wrk threads, ${DURATION}s each, acknowledgements=$ACK, $(nproc) cores (shared)"
# Baseline: the same client and connections against the cheapest answer (no body, no events).
run "baseline GET /health" 0 "$OUT/http_single.json" "http://127.0.0.1:$API_PORT/health" GET
run "batch of 100 events/POST" 100 "$OUT/http_batch100.json" "http://127.0.0.1:$PORT/api/events"
run "1 event/POST" 1 "$OUT/http_single.json" "http://127.0.0.1:$PORT/api/events"
echo "server peak RSS: $(awk '/VmHWM/ {printf "%.1f MiB", $2/1024}' "/proc/$PID/status")"
