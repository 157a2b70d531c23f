#!/usr/bin/env bash
# Benchmark (not a test) of the correlate transform.
#
# Part 1 (always): the transform's chunk loop (`transforms/examples/correlate_bench.rs`): OCSF
#   events (JSON text, as the ocsf transform emits them) applied to the session table in chunks, every chunk committed to a real redb store
#   (fsynced), the commit written while the next chunk is applied, as the transform does:
#   events/s with 100,000 concurrent sessions (with the time split into applying, encoding
#   commits and waiting for writes, and how much of the writes the applying hid), and peak
#   RSS / open sessions at 1,000,000 open sessions. Baselines in the same run: `dd ... conv=fsync` (the disk's sequential write
#   + fsync speed), one redb commit of a full (1 MiB) state log segment, and
#   `cat FILE > /dev/null`.
# Part 2 (BENCH_E2E=1; needs a release build of the whole binary, AWS SDK included): the same
#   through the binary, stdin -> correlate -> blackhole, next to stdin -> blackhole.
# Usage: [RUNS=N] bench/correlate.sh [EVENTS] [OPEN_SESSIONS]   (defaults 1000000 1000000;
#   RUNS repeats the throughput run, default 1: on a shared machine report the range; with
#   several runs, their median and best are printed). Binaries are taken from
#   $CARGO_TARGET_DIR when set.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-1000000}
OPEN=${2:-1000000}
CONCURRENT=100000
OUT=bench/out/correlate
mkdir -p "$OUT"
echo "machine: $(nproc) cores, $(uname -r); shared with other jobs while measured: figures are indicative"
dd if=/dev/zero of="$OUT/dd.bin" bs=1M count=256 conv=fsync 2>&1 | tail -1 | sed 's/^/baseline  dd 256 MiB + fsync: /'
rm -f "$OUT/dd.bin"
cargo build --release --quiet -p sessiontrail-transforms --example correlate_bench
TARGET=${CARGO_TARGET_DIR:-target}
EX=$TARGET/release/examples/correlate_bench
echo "baseline  $($EX store)"
rates=()
for _ in $(seq "${RUNS:-1}"); do
  line=$($EX throughput "$EVENTS" 100000)
  echo "correlate $line"
  rates+=("$(sed -E 's/.*: ([0-9]+) events\/s.*/\1/' <<<"$line")")
done
if [ "${#rates[@]}" -gt 1 ]; then
  sorted=$(printf '%s\n' "${rates[@]}" | sort -n)
  echo "correlate ${#rates[@]} runs: median $(sed -n "$(( (${#rates[@]} + 1) / 2 ))p" <<<"$sorted") events/s, best $(tail -1 <<<"$sorted") events/s"
fi
/usr/bin/time -f "%M" -o "$OUT/time.txt" $EX memory "$OPEN" | sed 's/^/correlate /'
echo "          (/usr/bin/time peak RSS: $(( $(cat "$OUT/time.txt") / 1024 )) MiB = $(( $(cat "$OUT/time.txt") * 1024 / OPEN )) bytes/session)"
[ "${BENCH_E2E:-0}" = 1 ] || exit 0

cargo build --release --quiet
BIN=$TARGET/release/sessiontrail

STREAM=$OUT/stream_${EVENTS}_${CONCURRENT}.ndjson
OPENS=$OUT/open_${OPEN}.ndjson
[ -s "$STREAM" ] || python3 bench/gen_ocsf_sessions.py --events "$EVENTS" --concurrent "$CONCURRENT" >"$STREAM"
[ -s "$OPENS" ] || python3 bench/gen_ocsf_sessions.py --events "$OPEN" --ends no >"$OPENS"

pipeline() { # $1 = file, $2 = with correlate (yes/no)
  local data="$OUT/data-$RANDOM"
  rm -rf "$data"
  if [ "$2" = yes ]; then
    cat >"$1" <<EOF
data_dir: $data
sources: { in: { type: stdin } }
transforms: { sessions: { type: correlate, inputs: [in] } }
sinks: { out: { type: blackhole, inputs: [sessions] } }
EOF
  else
    cat >"$1" <<EOF
data_dir: $data
sources: { in: { type: stdin } }
sinks: { out: { type: blackhole, inputs: [in] } }
EOF
  fi
}

# Runs the binary on $2 with pipeline $1; prints "seconds peak_rss_kb".
measure() {
  /usr/bin/time -f "%e %M" -o "$OUT/time.txt" "$BIN" run -c "$1" <"$2" >/dev/null 2>"$OUT/stderr.txt" \
    || { cat "$OUT/stderr.txt"; exit 1; }
  cat "$OUT/time.txt"
}

rate() { python3 -c "import sys; print(f'{$1/$2:,.0f}')"; }

bytes=$(stat -c %s "$STREAM")
start=$(date +%s.%N); cat "$STREAM" >/dev/null; end=$(date +%s.%N)
cat_s=$(python3 -c "print(max($end-$start, 1e-6))")
echo "baseline  cat $STREAM > /dev/null: $(rate "$bytes/1048576" "$cat_s") MB/s"

pipeline "$OUT/plain.yaml" no
read -r s rss <<<"$(measure "$OUT/plain.yaml" "$STREAM")"
echo "baseline  stdin -> blackhole:              $EVENTS events in ${s}s = $(rate "$EVENTS" "$s") events/s, peak RSS $((rss / 1024)) MiB"

pipeline "$OUT/corr.yaml" yes
read -r s rss <<<"$(measure "$OUT/corr.yaml" "$STREAM")"
echo "correlate stdin -> correlate -> blackhole: $EVENTS events, $CONCURRENT concurrent sessions, in ${s}s = $(rate "$EVENTS" "$s") events/s, peak RSS $((rss / 1024)) MiB"

pipeline "$OUT/plain.yaml" no
read -r _ base_rss <<<"$(measure "$OUT/plain.yaml" "$OPENS")"
pipeline "$OUT/corr.yaml" yes
read -r s rss <<<"$(measure "$OUT/corr.yaml" "$OPENS")"
echo "memory    $OPEN open sessions: peak RSS $((rss / 1024)) MiB = $((rss * 1024 / OPEN)) bytes/session; net of the pipeline without correlate ($((base_rss / 1024)) MiB): $(((rss - base_rss) * 1024 / OPEN)) bytes/session (${s}s)"
rm -rf "$OUT"/data-*
