#!/usr/bin/env bash
# Benchmark (not a test) of the `file` source: file -> file sink, `decoding: lines` and
# `ndjson`, next to `cat FILE > /dev/null` and the stdin -> file pipeline on the same file,
# all measured in this run. Prints MB/s, events/s and peak RSS.
#
#   bench/file_source.sh [LINES]      # default 1,300,000 lines (~500 MB)
#
# The file source never ends by itself (it tails), so the run is timed until the sink has
# received every line (read from GET /metrics), then the pipeline is stopped with SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED=${SESSIONTRAIL_SHARED:-$ROOT/../shared}
LINES=${1:-1300000}
OUT=$ROOT/bench/out
BIN=$ROOT/target/release/sessiontrail
mkdir -p "$OUT"
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet   # NO_BUILD=1: use the binary as it is
INPUT=$OUT/file_source_input_$LINES.ndjson
if [ ! -f "$INPUT" ]; then
  python3 "$SHARED/bench/gen_sessions.py" --count "$LINES" --seed bench --sessions 200 --out "$INPUT" --format mixed
fi
BYTES=$(stat -c %s "$INPUT")
MB=$(python3 -c "print($BYTES/1e6)")
echo "input: $INPUT  $LINES lines, $MB MB"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) (shared machine: figures vary)"

rate() { python3 -c "import sys; s=float(sys.argv[1]); print(f'{$MB/s:8.1f} MB/s  {$LINES/s:11.0f} lines/s  ({s:.2f} s)')" "$1"; }
now() { date +%s.%N; }

# Baseline 1: the disk/page cache.
cat "$INPUT" > /dev/null
t0=$(now); /usr/bin/time -f "%M" -o "$OUT/cat.rss" cat "$INPUT" > /dev/null; t1=$(now)
printf "%-28s %s  peak RSS %6d KB\n" "cat > /dev/null" "$(rate "$(echo "$t1 - $t0" | bc)")" "$(cat "$OUT/cat.rss")"

# Baseline 2: the foundation's stdin -> file pipeline (ndjson).
cat > "$OUT/stdin.yaml" <<YAML
sources:
  in:
    type: stdin
sinks:
  out:
    type: file
    inputs: [in]
    path: $OUT/stdin_out.ndjson
YAML
rm -f "$OUT/stdin_out.ndjson"
t0=$(now); /usr/bin/time -f "%M" -o "$OUT/stdin.rss" "$BIN" run -c "$OUT/stdin.yaml" < "$INPUT" 2>/dev/null; t1=$(now)
printf "%-28s %s  peak RSS %6d KB\n" "stdin -> file (ndjson)" "$(rate "$(echo "$t1 - $t0" | bc)")" "$(cat "$OUT/stdin.rss")"

run_file_source() {
  local decoding=$1 port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rm -rf "$OUT/file_data" "$OUT/file_out.ndjson" "$OUT/file_dropped.ndjson"
  cat > "$OUT/file.yaml" <<YAML
data_dir: $OUT/file_data
api:
  address: 127.0.0.1:$port
sources:
  in:
    type: file
    include: ["$INPUT"]
    decoding: $decoding
sinks:
  out:
    type: file
    inputs: [in]
    path: $OUT/file_out.ndjson
  dead:
    type: file
    inputs: [in.dropped]
    path: $OUT/file_dropped.ndjson
YAML
  t0=$(now)
  /usr/bin/time -f "%M" -o "$OUT/file.rss" "$BIN" run -c "$OUT/file.yaml" 2>/dev/null &
  local pid=$!
  # Every line reaches one of the two sinks (the generator writes some malformed lines).
  while :; do
    local done
    done=$(curl -sf "http://127.0.0.1:$port/metrics" 2>/dev/null \
      | awk '/^sessiontrail_component_received_events_total\{component="(out|dead)"/ {s+=$2} END {print s+0}')
    [ "${done:-0}" -ge "$LINES" ] && break
    sleep 0.1
  done
  t1=$(now)
  # SIGTERM the pipeline (the child of /usr/bin/time).
  kill -TERM "$(pgrep -P "$pid")"
  wait "$pid" || true
  printf "%-28s %s  peak RSS %6d KB\n" "file -> file ($decoding)" "$(rate "$(echo "$t1 - $t0" | bc)")" "$(cat "$OUT/file.rss")"
}
run_file_source lines
run_file_source ndjson
