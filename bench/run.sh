#!/usr/bin/env bash
# Runner benchmark (not a test): throughput and peak memory of the basic pipelines on a
# generated file of remote-session events, next to the machine's own baseline measured in the
# same run.
#
#   bench/run.sh [SIZE_MB]        # default 520 MB of input
#
# Prints, per case: wall time, MB/s and events/s of input, peak RSS (from /usr/bin/time -v).
# Cases: `cat FILE > /dev/null` (baseline: reading the file from the page cache),
# `stdin -> file` (ndjson: parse + serialize), `stdin -> filter -> file`, and
# `demo -> stdout > /dev/null` (generation + serialize). The file sink fsyncs before it
# acknowledges (its default); the output goes to bench/out/ on the same disk.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED=${SESSIONTRAIL_SHARED:-$ROOT/../shared}
OUT=$ROOT/bench/out
SIZE_MB=${1:-520}
mkdir -p "$OUT"

INPUT=$OUT/sessions_${SIZE_MB}mb.ndjson
if [ ! -s "$INPUT" ]; then
  # With these options gen_sessions.py writes ~545 bytes per line: the file is ~1.45 x SIZE_MB.
  echo "generating $INPUT (about $SIZE_MB MB)..."
  python3 "$SHARED/bench/gen_sessions.py" --count $((SIZE_MB * 2700)) --seed bench --sessions 1000 \
    --format mixed --out "$INPUT" >/dev/null
fi
BYTES=$(stat -c %s "$INPUT")
LINES=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['lines'])" "$INPUT.summary.json")

[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet   # NO_BUILD=1: use the binary as it is
BIN=$ROOT/target/release/sessiontrail

cat >"$OUT/stdin_file.yaml" <<YAML
data_dir: $OUT/data
sources:
  in: { type: stdin }
sinks:
  out: { type: file, inputs: [in], path: $OUT/stdin_file.out.ndjson }
  dead: { type: file, inputs: [in.dropped], path: $OUT/stdin_file.dropped.ndjson }
YAML
cat >"$OUT/stdin_filter_file.yaml" <<YAML
data_dir: $OUT/data
sources:
  in: { type: stdin }
transforms:
  sessions:
    type: filter
    inputs: [in]
    condition:
      any:
        - exists: session_id
        - exists: sessionId
        - exists: detail.eventName
        - exists: session_detail.session_id
sinks:
  out: { type: file, inputs: [sessions], path: $OUT/stdin_filter_file.out.ndjson }
  dead: { type: file, inputs: [in.dropped], path: $OUT/stdin_filter_file.dropped.ndjson }
YAML
DEMO_EVENTS=2000000
cat >"$OUT/demo_stdout.yaml" <<YAML
data_dir: $OUT/data
sources:
  gen: { type: demo, count: $DEMO_EVENTS, format: mixed, seed: 1 }
sinks:
  out: { type: stdout, inputs: [gen] }
YAML

# measure NAME EVENTS INPUT_BYTES COMMAND...: runs COMMAND under /usr/bin/time -v.
measure() {
  local name=$1 events=$2 bytes=$3
  shift 3
  local stats=$OUT/time.txt
  /usr/bin/time -v -o "$stats" bash -c "$*"
  python3 - "$name" "$events" "$bytes" "$stats" <<'PY'
import sys
name, events, nbytes, stats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
wall = rss = None
for line in open(stats):
    line = line.strip()
    if line.startswith("Elapsed (wall clock) time"):
        parts = [float(p) for p in line.rsplit(" ", 1)[1].split(":")]
        wall = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
    elif line.startswith("Maximum resident set size"):
        rss = int(line.rsplit(" ", 1)[1]) / 1024
    elif line.startswith("Percent of CPU"):
        cpu = line.rsplit(" ", 1)[1]
print(f"{name:<34} {wall:7.2f} s {nbytes / 1e6 / wall:8.1f} MB/s {events / wall:11,.0f} events/s   peak RSS {rss:6.1f} MiB   CPU {cpu}")
PY
}

echo "input: $INPUT: $((BYTES / 1000000)) MB, $LINES lines; $(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
cat "$INPUT" >/dev/null # warm the page cache so every case reads from memory
measure "cat FILE > /dev/null (baseline)" "$LINES" "$BYTES" "cat '$INPUT' > /dev/null"
rm -f "$OUT"/stdin_file.*.ndjson
measure "stdin -> file" "$LINES" "$BYTES" "'$BIN' run -c '$OUT/stdin_file.yaml' < '$INPUT' 2>/dev/null"
echo "    wrote $(wc -l <"$OUT/stdin_file.out.ndjson") events, $(wc -l <"$OUT/stdin_file.dropped.ndjson" 2>/dev/null || echo 0) dead letters"
rm -f "$OUT"/stdin_file.*.ndjson
rm -f "$OUT"/stdin_filter_file.*.ndjson
measure "stdin -> filter -> file" "$LINES" "$BYTES" "'$BIN' run -c '$OUT/stdin_filter_file.yaml' < '$INPUT' 2>/dev/null"
echo "    wrote $(wc -l <"$OUT/stdin_filter_file.out.ndjson") events, $(wc -l <"$OUT/stdin_filter_file.dropped.ndjson" 2>/dev/null || echo 0) dead letters"
rm -f "$OUT"/stdin_filter_file.*.ndjson
# The demo's output size: measured on a sample of the same seed, then scaled.
DEMO_SAMPLE=$("$BIN" run -c <(sed "s/count: $DEMO_EVENTS/count: 100000/" "$OUT/demo_stdout.yaml") 2>/dev/null | wc -c)
DEMO_BYTES=$((DEMO_SAMPLE * DEMO_EVENTS / 100000))
measure "demo -> stdout > /dev/null" "$DEMO_EVENTS" "$DEMO_BYTES" "'$BIN' run -c '$OUT/demo_stdout.yaml' > /dev/null 2>/dev/null"
echo "(MB/s of the demo case: bytes of NDJSON it writes; load average after: $(cut -d' ' -f1-3 /proc/loadavg))"
