#!/usr/bin/env bash
# csm-cpu on a many-core x86 host (the GPU machine's CPU): build the kernels, run the kernel twin
# tests and the tests/cpu suite with each kernel path forced, then bench_cpu per path with --profile.
# Run from the repo root with PYTHONPATH holding packages/*/src and the site dir; logs go to $OUT.
#   OUT=/tmp/out bash tools/device_cpu_check.sh
# Budget: < 8 min on 16 cores (tests ~2-3 min, benches ~4 min; THREADS/FRAMES/FORMATS override).
set -u
OUT=${OUT:-/tmp/csm_cpu_check}
THREADS=${THREADS:-1,2,4,8,16}
FRAMES=${FRAMES:-3}
FORMATS=${FORMATS:-q8_0,q4_0}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/summary.txt"; }

log "host: $(nproc) CPUs; $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
grep -o 'avx512[a-z_0-9]*\|avx_vnni\|amx_[a-z0-9]*' /proc/cpuinfo | sort -u | tr '\n' ' ' >>"$OUT/summary.txt"; echo >>"$OUT/summary.txt"
log "build kernels"
$PY packages/csm-cpu/hatch_build.py >"$OUT/build.log" 2>&1 || { log "BUILD FAILED (see build.log)"; tail -30 "$OUT/build.log"; exit 1; }
$PY - >>"$OUT/summary.txt" 2>&1 <<'PY'
import importlib, json
for m in ("numpy", "gguf", "ml_dtypes", "hypothesis", "pytest", "torch", "transformers", "soundfile", "moshi"):
    try:
        importlib.import_module(m); print("import ok:", m)
    except Exception as e:  # noqa: BLE001
        print("import MISSING:", m, type(e).__name__, e)
import csm_cpu
from csm_cpu import topology
print("features:", json.dumps(csm_cpu.cpu_features()))
print("topology:", json.dumps(topology.describe()))
PY
tail -3 "$OUT/summary.txt"

PATHS=$($PY -c "from csm_cpu.features import supported_isas; print(' '.join(supported_isas()))")
log "paths runnable here: $PATHS"
# nothing in tests/cpu needs soundfile or moshi; the *_in_a_subprocess tests re-run files: deselected (done here)
PYTEST="$PY -m pytest -q -p no:cacheprovider"
log "kernel twin tests (every path through the isa fixture; avx512 vs avx2 bit-identity)"
timeout 300 $PYTEST tests/cpu/test_matvec.py tests/cpu/test_ops.py tests/cpu/test_mimi_kernels.py tests/cpu/test_kernel_boundaries.py \
  -rs >"$OUT/test_kernels.log" 2>&1; log "kernel tests rc=$? $(tail -1 "$OUT/test_kernels.log")"
for isa in $PATHS; do
  case $isa in  # the detected best path gets the whole suite; the others its parity and slot tests
    avx512) sel=(tests/cpu) ;;
    portable) sel=(tests/cpu/test_backend.py) ;;
    *) sel=(tests/cpu/test_backend.py tests/cpu/test_slots.py) ;;
  esac
  log "tests/cpu with CSM_CPU_ISA=$isa: ${sel[*]}"
  CSM_CPU_ISA=$isa timeout 240 $PYTEST "${sel[@]}" -k "not in_a_subprocess" \
    >"$OUT/test_cpu_$isa.log" 2>&1; log "rc=$? $(tail -1 "$OUT/test_cpu_$isa.log")"
done

ISAS=$(echo "$PATHS" | tr ' ' '\n' | grep -v portable | paste -sd, -)
log "bench_cpu $FORMATS x {$ISAS} at $THREADS threads, $FRAMES frames, --profile"
timeout 330 $PY tools/bench_cpu.py --formats "$FORMATS" --threads "$THREADS" --frames "$FRAMES" --batch 1,8 \
  --no-reference --no-competing --no-prefill --profile --isa "$ISAS" >"$OUT/bench_cpu.log" 2>&1
log "bench rc=$?"
grep -v '^# {' "$OUT/bench_cpu.log" | tee -a "$OUT/summary.txt" | tail -60
log "done"
