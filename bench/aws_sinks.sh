#!/usr/bin/env bash
# Benchmark (not a test): throughput of the aws_s3 and aws_cloudwatch_logs sinks into a local
# moto emulator, and the sinks' own CPU cost per MB. moto (single-threaded Python) is the
# bottleneck: the figures say how fast the emulator ingests, the CPU-per-MB figure is ours.
#   bench/aws_sinks.sh [EVENTS]      (default 200000; PROFILE=debug to skip the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
EVENTS=${1:-200000}
PROFILE=${PROFILE:-release}
VENV=${SESSIONTRAIL_VENV:-$ROOT/target/venv}
SHARED=${SESSIONTRAIL_SHARED:-$ROOT/../shared}
OUT=$ROOT/bench/out
mkdir -p "$OUT"

if [ "$PROFILE" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
BIN=$ROOT/target/$PROFILE/sessiontrail

INPUT=$OUT/aws_sinks.$EVENTS.ndjson
[ -f "$INPUT" ] || python3 "$SHARED/bench/gen_sessions.py" --count "$EVENTS" --seed 8 --sessions 500 \
  --bad-fraction 0 --format windows --out "$INPUT" >/dev/null
BYTES=$(stat -c %s "$INPUT")

PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$OUT/moto.log" 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/moto-api/" >/dev/null && break; sleep 0.1; done
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
  AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
"$VENV/bin/python" -c "import boto3; boto3.client('s3', endpoint_url='$AWS_ENDPOINT_URL').create_bucket(Bucket='bench')"

# run NAME SINK_YAML: runs stdin -> sink over the input, prints the figures.
run() {
  local name=$1 sink=$2
  printf 'sources:\n  in:\n    type: stdin\nsinks:\n  out:\n    inputs: [in]\n%s\n' "$sink" >"$OUT/$name.yaml"
  /usr/bin/time -v "$BIN" run -c "$OUT/$name.yaml" <"$INPUT" 2>"$OUT/$name.time" >/dev/null
  python3 - "$name" "$EVENTS" "$BYTES" "$OUT/$name.time" <<'PY'
import re, sys
name, events, size, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
t = open(path).read()
def field(label):
    return re.search(re.escape(label) + r":\s*(.+)", t).group(1).strip()
wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")
secs = sum(float(x) * 60 ** i for i, x in enumerate(reversed(wall)))
cpu = float(field("User time (seconds)")) + float(field("System time (seconds)"))
mb = size / 1e6
print(f"{name:22s} {events/secs:10.0f} events/s {mb/secs:7.2f} MB/s  wall {secs:6.2f} s  "
      f"CPU {cpu:6.2f} s = {cpu/mb*1000:6.1f} ms/MB  peak RSS {int(field('Maximum resident set size (kbytes)'))//1024} MB")
PY
}

echo "input: $EVENTS events, $((BYTES / 1000000)) MB ($INPUT); profile $PROFILE; $(nproc) cores, shared with other builds"
start=$(date +%s.%N); cat "$INPUT" >/dev/null; end=$(date +%s.%N)
python3 -c "print(f'baseline cat > /dev/null     {$BYTES/1e6/($end-$start):8.0f} MB/s')"
run blackhole "    type: blackhole"
run aws_s3 "    type: aws_s3
    bucket: bench
    key_prefix: bench/
    batch: { max_bytes: 10000000 }"
run aws_cloudwatch_logs "    type: aws_cloudwatch_logs
    group_name: /bench
    stream_name: bench"
echo "moto is the bottleneck (one Python process); the sinks' own CPU is the CPU column minus the blackhole run."
