#!/usr/bin/env bash
# Side-by-side EfficientNet-Lite0 (random weights): oneDNN (layouts any / nhwc / nChw16c) vs
# onnxruntime, threads {1,2} x batch {1,16}. Rounds alternate between the engines; each round
# times every configuration for SECS seconds after a warm-up; the best round is reported.
#   gcc -O2 tools/engines/onednn_bench.c -ldnnl -lm -o /tmp/onednn_bench
#   tools/engines/compare.sh            # ~80 s on 2 cores
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-/tmp/onednn_bench}
PY=${PY:-.venv/bin/python}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-1.0}
LOG=${LOG:-/tmp/engines_compare.log}
: >"$LOG"
busy() { # % of both CPUs busy during the last second (others' load, logged per round)
  local a b; a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
  local tot=0 i; for i in 1 2 3 4 5 6 7 8; do tot=$((tot + b[i] - a[i])); done
  echo $(( 100 * (tot - (b[4] - a[4]) - (b[5] - a[5])) / (tot ? tot : 1) ))
}
for r in $(seq 1 "$ROUNDS"); do
  echo "# round $r, cpu busy before round: $(busy)%" | tee -a "$LOG"
  for l in any nChw16c nhwc; do
    "$BIN" --layout "$l" --rounds 1 --secs "$SECS" | tee -a "$LOG" | grep RESULT
  done
  "$PY" tools/engines/ort_lite0_random.py --rounds 1 --secs "$SECS" 2>&1 | tee -a "$LOG" | grep RESULT
done
echo "# best of $ROUNDS rounds, images/s"
awk '/^RESULT/ { split($3,t,"="); split($4,b,"="); split($5,v,"=");
       k=$2" "t[2]" "b[2]; if (v[2]>best[k]) best[k]=v[2]; eng[$2]=1 }
     END { printf "%-16s %10s %10s %10s %10s\n", "engine", "t1/b1", "t1/b16", "t2/b1", "t2/b16";
           for (e in eng) printf "%-16s %10.1f %10.1f %10.1f %10.1f\n", e, best[e" 1 1"],
             best[e" 1 16"], best[e" 2 1"], best[e" 2 16"] }' "$LOG" | sort
