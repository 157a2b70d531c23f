#!/usr/bin/env bash
# Benchmark (not a test): events/s pulled from the AWS emulator by the aws_s3 and
# aws_cloudwatch_logs sources, with peak RSS, next to the same run's baselines:
#   - `cat` of the generated input (disk/page-cache speed),
#   - a plain boto3 client listing + reading the same data from the same emulator (the
#     emulator's own ceiling: moto is a single-threaded Python server and is the bottleneck).
#
#   bench/pull_sources.sh [EVENTS]        (default 20000 per source; release build)
#   BENCH_PROFILE=debug bench/pull_sources.sh   (reuse the debug build; slower, says so)
#
# Needs the Python venv with moto (SESSIONTRAIL_VENV, default /work/venv or target/venv).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
EVENTS=${1:-20000}
VENV=${SESSIONTRAIL_VENV:-/work/venv}
[ -x "$VENV/bin/moto_server" ] || VENV=$ROOT/target/venv
PY=$VENV/bin/python
OUT=$ROOT/bench/out/pull_sources
GEN=${SESSIONTRAIL_SHARED:-$ROOT/../shared}/bench/gen_sessions.py
mkdir -p "$OUT"

PROFILE=${BENCH_PROFILE:-release}
if [ "$PROFILE" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
BIN=$ROOT/target/$PROFILE/sessiontrail
echo "binary: $BIN ($PROFILE build)"

PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$OUT/moto.log" 2>&1 &
MOTO_PID=$!
trap 'kill $MOTO_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/moto-api/" >/dev/null 2>&1 && break; sleep 0.1; done
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

"$PY" "$GEN" --count "$EVENTS" --seed bench --sessions 50 --format wsb --bad-fraction 0 --secret-fraction 0 --out "$OUT/wsb.ndjson" >/dev/null
"$PY" "$GEN" --count "$EVENTS" --seed bench --sessions 50 --format ssm --bad-fraction 0 --secret-fraction 0 --out "$OUT/ssm.ndjson" >/dev/null
BYTES_WSB=$(stat -c %s "$OUT/wsb.ndjson")

echo "== machine baseline (same run)"
START=$(date +%s.%N); cat "$OUT/wsb.ndjson" "$OUT/ssm.ndjson" >/dev/null; END=$(date +%s.%N)
awk -v b="$(( BYTES_WSB + $(stat -c %s "$OUT/ssm.ndjson") ))" -v s="$START" -v e="$END" \
  'BEGIN { printf "cat of the inputs: %.0f MB/s\n", b / 1e6 / (e - s) }'

# Load the emulator (objects of 1,000 lines; log events in batches of 1,000) and measure
# how fast a plain boto3 client reads everything back: the emulator's ceiling.
"$PY" - "$OUT" "$EVENTS" <<'PYEOF'
import sys, time, boto3
out, n = sys.argv[1], int(sys.argv[2])
s3 = boto3.client("s3"); logs = boto3.client("logs")
s3.create_bucket(Bucket="bench-wsb")
lines = open(f"{out}/wsb.ndjson", "rb").read().splitlines(keepends=True)
for i in range(0, len(lines), 1000):
    s3.put_object(Bucket="bench-wsb", Key=f"portal/2025/03/10/obj-{i//1000:06d}.jsonl", Body=b"".join(lines[i:i+1000]))
logs.create_log_group(logGroupName="/bench/ssm"); logs.create_log_stream(logGroupName="/bench/ssm", logStreamName="s")
now = int(time.time() * 1000) - 600_000
msgs = open(f"{out}/ssm.ndjson", encoding="utf-8").read().splitlines()
for i in range(0, len(msgs), 1000):
    logs.put_log_events(logGroupName="/bench/ssm", logStreamName="s",
        logEvents=[{"timestamp": now + (i + j) // 100, "message": m} for j, m in enumerate(msgs[i:i+1000])])
t = time.time(); count = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket="bench-wsb"):
    for o in page.get("Contents", []):
        count += s3.get_object(Bucket="bench-wsb", Key=o["Key"])["Body"].read().count(b"\n")
print(f"boto3 baseline, S3 list+get: {count / (time.time() - t):.0f} events/s ({count} events)")
t = time.time(); count = 0
for page in logs.get_paginator("filter_log_events").paginate(logGroupName="/bench/ssm", startTime=now - 1000):
    count += len(page["events"])
print(f"boto3 baseline, FilterLogEvents: {count / (time.time() - t):.0f} events/s ({count} events)")
PYEOF

# Runs one pipeline until its source has emitted EVENTS events; prints events/s and peak RSS.
run_source() {
  local label=$1 source_yaml=$2 bytes=$3
  local dir=$OUT/$label api_port
  rm -rf "$dir"; mkdir -p "$dir"
  api_port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$dir/pipeline.yaml" <<YAML
data_dir: $dir/data
api:
  address: 127.0.0.1:$api_port
sources:
$source_yaml
sinks:
  discard:
    type: blackhole
    inputs: [in]
YAML
  local start end
  start=$(date +%s.%N)
  /usr/bin/time -v "$BIN" run -c "$dir/pipeline.yaml" 2>"$dir/time.txt" >/dev/null &
  local tpid=$!
  local got=0
  for _ in $(seq 1 6000); do
    got=$(curl -sf "http://127.0.0.1:$api_port/metrics" 2>/dev/null \
      | awk '/^sessiontrail_component_sent_events_total\{component="in"/ { print $2 }' || true)
    [ "${got:-0}" -ge "$EVENTS" ] 2>/dev/null && break
    sleep 0.05
  done
  end=$(date +%s.%N)
  pkill -TERM -P "$tpid" 2>/dev/null || true
  wait "$tpid" || true
  local rss
  rss=$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$dir/time.txt")
  awk -v n="${got:-0}" -v b="$bytes" -v s="$start" -v e="$end" -v r="$rss" -v l="$label" \
    'BEGIN { printf "%s: %d events in %.2f s = %.0f events/s, %.1f MB/s, peak RSS %.1f MB\n", l, n, e - s, n / (e - s), b / 1e6 / (e - s), r / 1024 }'
}

echo "== sessiontrail (release), source -> blackhole"
run_source aws_s3 "  in:
    type: aws_s3
    bucket: bench-wsb
    poll_interval: 60s" "$BYTES_WSB"
run_source aws_cloudwatch_logs "  in:
    type: aws_cloudwatch_logs
    group_names: [/bench/ssm]
    start_time: -1h
    poll_interval: 60s
    max_requests_per_second: 5" "$(stat -c %s "$OUT/ssm.ndjson")"
echo "(figures include pipeline start-up; the machine was shared with other builds when measured)"
