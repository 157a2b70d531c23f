#!/usr/bin/env bash
# Benchmark (not a test): the cost of `redact` on a generated stream with 10% secret-bearing lines.
#   stdin -> file            (baseline pipeline)
#   stdin -> redact -> file  (the same with redaction)
# plus `cat FILE > /dev/null` as the machine's own baseline, all in one run. Prints MB/s,
# events/s and peak RSS of each, and the redact cost relative to the baseline pipeline.
#   bench/redact.sh [LINES]        (default 200000 lines, about 110 MB)
#   PROFILE=debug bench/redact.sh  uses the dev build (no release build needed; slower, skewed)
#   ROUNDS=9 bench/redact.sh       more alternating rounds (default 3); the median is printed too
#   BIN=/path/to/sessiontrail bench/redact.sh  measures that binary, without building (A/B runs
#   of saved binaries: the shared target directory may be rebuilt by someone else meanwhile)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
SHARED=${SESSIONTRAIL_SHARED:-$ROOT/../shared}
LINES=${1:-200000}
OUT=$ROOT/bench/out
mkdir -p "$OUT"
INPUT=$OUT/redact-input-$LINES.ndjson

[ -f "$INPUT" ] || python3 "$SHARED/bench/gen_sessions.py" --count "$LINES" --seed redact-bench \
  --sessions 200 --format mixed --secret-fraction 0.1 --out "$INPUT" >/dev/null
PROFILE=${PROFILE:-release}
if [ -z "${NO_BUILD:-}" ] && [ -z "${BIN:-}" ]; then   # NO_BUILD=1: use the binary as it is
  if [ "$PROFILE" = release ]; then cargo build --release --quiet; else cargo build --quiet; fi
fi
BIN=${BIN:-$ROOT/target/$PROFILE/sessiontrail}
[ -x "$BIN" ] || { echo "no binary at $BIN"; exit 1; }
BYTES=$(stat -c %s "$INPUT")

pipeline() { # $1 = name, $2 = with redact (yes/no)
  local f=$OUT/$1.yaml
  {
    echo "data_dir: $OUT/data-$1"
    echo "sources:"
    echo "  in: { type: stdin }"
    if [ "$2" = yes ]; then
      echo "transforms:"
      echo "  scrub: { type: redact, inputs: [in] }"
      echo "sinks:"
      echo "  out: { type: file, inputs: [scrub], path: $OUT/$1.out.ndjson, fsync: false }"
    else
      echo "sinks:"
      echo "  out: { type: file, inputs: [in], path: $OUT/$1.out.ndjson, fsync: false }"
    fi
  } >"$f"
  echo "$f"
}

# Runs "$@" with stdin from the input; prints "seconds peak_rss_kb".
measure() {
  /usr/bin/time -o "$OUT/time.txt" -f '%e %M' "$@" <"$INPUT" >/dev/null 2>/dev/null
  tail -1 "$OUT/time.txt"
}

report() { # name seconds rss_kb
  awk -v n="$1" -v s="$2" -v r="$3" -v b="$BYTES" -v l="$LINES" \
    'BEGIN { printf "%-26s %8.1f MB/s %10.0f events/s  peak RSS %6.1f MB  (%.2f s)\n", n, b/1e6/s, l/s, r/1024, s }'
}

echo "input: $INPUT ($LINES lines, $(awk -v b="$BYTES" 'BEGIN{printf "%.1f", b/1e6}') MB, 10% secret-bearing)"
echo "binary: $BIN ($PROFILE profile)"
echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg) (shared with other builds: figures are indicative)"

read -r cat_s cat_rss < <(measure cat)
report "cat > /dev/null" "$cat_s" "$cat_rss"

plain=$(pipeline plain no)
scrub=$(pipeline redact yes)
ROUNDS=${ROUNDS:-3}
best_plain=""; best_redact=""; all_plain=""; all_redact=""
for round in $(seq "$ROUNDS"); do
  rm -f "$OUT"/plain.out.ndjson "$OUT"/redact.out.ndjson
  read -r ps pr < <(measure "$BIN" run -c "$plain")
  rm -f "$OUT"/plain.out.ndjson "$OUT"/redact.out.ndjson
  read -r rs rr < <(measure "$BIN" run -c "$scrub")
  report "stdin -> file (#$round)" "$ps" "$pr"
  report "stdin -> redact -> file (#$round)" "$rs" "$rr"
  if [ -z "$best_plain" ] || awk -v a="$ps" -v b="$best_plain" 'BEGIN{exit !(a<b)}'; then best_plain=$ps; fi
  if [ -z "$best_redact" ] || awk -v a="$rs" -v b="$best_redact" 'BEGIN{exit !(a<b)}'; then best_redact=$rs; fi
  all_plain="$all_plain $ps"; all_redact="$all_redact $rs"
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
med_plain=$(echo "$all_plain" | median); med_redact=$(echo "$all_redact" | median)
secrets=$(grep -c 'REDACTED' "$OUT/redact.out.ndjson" || true)
echo "lines with a redaction in the output: $secrets"
awk -v p="$best_plain" -v r="$best_redact" -v b="$BYTES" -v n="$ROUNDS" 'BEGIN {
  printf "best of %d: stdin -> file %.1f MB/s, stdin -> redact -> file %.1f MB/s: redact costs %.1f%% of the throughput (target <= 25%%)\n",
    n, b/1e6/p, b/1e6/r, (1 - p/r) * 100 }'
awk -v p="$med_plain" -v r="$med_redact" -v b="$BYTES" -v n="$ROUNDS" 'BEGIN {
  printf "median of %d: stdin -> file %.1f MB/s, stdin -> redact -> file %.1f MB/s: redact costs %.1f%%\n",
    n, b/1e6/p, b/1e6/r, (1 - p/r) * 100 }'
