#!/usr/bin/env bash
# Issue 17 on the GPU machine's 16-core host: corpus synthesis (tools/bench_corpus.py) on random
# CSM-1B-shaped weights in Q4_0 (csm-cpu), one local process, then Ray Data with 1, 2, 4, 8 actors
# of CPUS/N threads each: rows/s, audio-seconds/s (over the wall time and steady, after the first
# row) and the scaling ratio against 1 actor.
#
# Run from the repo root, after the wheels (/work/notes/wheels) are installed into /tmp/site:
#   export PYTHONPATH=/tmp/site:$(ls -d packages/*/src | paste -sd:)
#   OUT=$OUT bash tools/device_ops.sh
# Logs and JSON go to $OUT (bench.log, corpus_*.json, summary.txt). Bounded by BUDGET_S (360 s)
# of its own: each run is cut at what is left, and one that would start with < 30 s left is skipped.
# Order: Ray 1 actor (the base), 8, 4, 2, then the local process. Writing the random model (once per
# machine; kept in $CACHE) takes 1-2 min of the budget. The call's limit is 600 s: BUDGET_S=540 fits.
# Knobs (env): CONFIG=full|tiny QUANT=q4_0 ROWS=32 FRAMES=16 SLOTS=4 BLOCK=4 ACTORS="1 8 4 2"
#   CPUS=$(nproc, at most 16) TOK=path/to/tokenizer.model CACHE=/tmp/csm-bench-...
# Tested on the 2-core dev machine: CONFIG=tiny ROWS=8 FRAMES=10 ACTORS="1 2" CPUS=2 OUT=/tmp/x.
set -u
OUT=${OUT:?set OUT to the output folder}
mkdir -p "$OUT"
BUDGET_S=${BUDGET_S:-360}
CONFIG=${CONFIG:-full}; QUANT=${QUANT:-q4_0}; ROWS=${ROWS:-32}; FRAMES=${FRAMES:-16}; SLOTS=${SLOTS:-4}
BLOCK=${BLOCK:-4}; ACTORS=${ACTORS:-"1 8 4 2"}
n=$(nproc); CPUS=${CPUS:-$(( n < 16 ? n : 16 ))}
CACHE=${CACHE:-/tmp/csm-bench-$CONFIG-$QUANT}
export PYTHONUNBUFFERED=1 RAY_USAGE_STATS_ENABLED=0 RAY_DEDUP_LOGS=0
LOG=$OUT/bench.log
. "$(dirname "$0")/device_env.sh"  # the clock (left, log), TOK, SITE; register_packages, ensure_kernels

log "host: $(nproc) cores, CPUS=$CPUS; python $(python3 -c 'import sys; print(sys.version.split()[0])'); tokenizer ${TOK:-not found}"
python3 -c 'import ray, pyarrow, numpy; print("ray", ray.__version__, "pyarrow", pyarrow.__version__, "numpy", numpy.__version__)' 2>&1 | tee -a "$LOG"

# 1. the workspace packages' metadata and csm-cpu's Cython kernels
register_packages "$SITE" >>"$LOG" 2>&1 || { log "register_packages failed"; exit 1; }
ensure_kernels "$OUT/build.log" >>"$LOG" 2>&1; tail -1 "$LOG"
kernels_ok || { log "csm-cpu's kernels are not importable: see build.log"; tail -20 "$OUT/build.log"; exit 1; }
python3 -c 'import csm_cpu, csm_cpu.backend; print("csm_cpu", csm_cpu.__file__)' 2>&1 | tee -a "$LOG"

# 2. the random model (kept in $CACHE between runs on a warm machine)
log "writing the random $CONFIG $QUANT model under $CACHE"
MODEL=$(python3 tools/make_random_model.py --config "$CONFIG" --gguf "$QUANT" --out "$CACHE" ${TOK:+--tokenizer "$TOK"} 2>>"$LOG") \
  || { log "make_random_model failed"; tail -20 "$LOG"; exit 1; }
log "model $MODEL"
COMMON=(--model "$MODEL" --mimi "$CACHE/mimi.safetensors" --tokenizer "$CACHE/tokenizer.model"
        --rows "$ROWS" --frames "$FRAMES" --slots "$SLOTS" --rows-per-block "$BLOCK")

# 3. the runs, each in its own process (a fresh Ray each time), each bounded by what is left
run() {  # name, args...
  local name=$1; shift
  local budget; budget=$(left)
  if [ "$budget" -lt 30 ]; then log "$name: skipped, ${budget} s of the budget left"; return; fi
  log "$name: python3 tools/bench_corpus.py ${COMMON[*]} $*"
  timeout -k 10 "$budget" python3 tools/bench_corpus.py "${COMMON[@]}" --json "$OUT/corpus_$name.json" "$@" 2>&1 \
    | grep -v "^\s*$" | tee -a "$LOG" | grep -E "rows/s|failed|Error|error" || true
}
# Ray first (1 actor first: the scaling base; then the most actors), the local process last
for a in $ACTORS; do
  run "ray$a" --only ray --actors "$a" --threads-per-actor $(( CPUS / a > 0 ? CPUS / a : 1 ))
done
run local --only local --threads "$CPUS"

# 4. the table
python3 - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path
rows = []
for f in sorted(Path(sys.argv[1]).glob("corpus_*.json")):
    d = json.loads(f.read_text())
    rows += d["results"]
print("| run | threads | rows | audio s | wall s | rows/s | audio s/s | start-up s | rows/s after it | audio s/s after it | vs 1 actor (after start-up) |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
base = next((r for r in rows if r["run"] == "ray 1 actor(s)"), None)
for r in rows:
    th = r.get("threads_per_actor") or r.get("threads")
    th = f"{r['actors']}x{th}" if "actors" in r else th
    ratio = f"{r['work_rows_per_s'] / base['work_rows_per_s']:.2f}x" if base and r["run"].startswith("ray") else ""
    print(f"| {r['run']} | {th} | {r['rows']} | {r['audio_s']:.1f} | {r['wall_s']:.1f} | {r['rows_per_s']:.3f} | "
          f"{r['audio_s_per_s']:.3f} | {r['startup_s']:.1f} | {r['work_rows_per_s']:.3f} | "
          f"{r['work_audio_s_per_s']:.3f} | {ratio} |")
EOF
log "done"
