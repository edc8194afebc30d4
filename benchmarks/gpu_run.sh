#!/usr/bin/env bash
# GPU validation and benchmark of the fused attention-pooling op, in time-boxed stages that fit the
# device budget (15 minutes in all, at most 10 per command). Run from the repository root:
#
#   OUT=/some/dir bash benchmarks/gpu_run.sh 1 2      # stages 1 and 2 (default), ~7 min
#   OUT=/some/dir bash benchmarks/gpu_run.sh 3        # optional stage 3, in a later command
#
# Stage 1 (box STAGE1_S=270 s): build a wheel the way CI's install check does (an sdist, then pip wheel
#   --no-build-isolation of it against this machine's torch, CMAKE_CUDA_ARCHITECTURES=90), install it, run
#   tests/test_ops_cuda.py and the CUDA cases of tests/test_ops.py, one compute-sanitizer memcheck pass.
# Stage 2 (box STAGE2_S=200 s): benchmarks/bench_ops.py --device cuda at the key shapes (fused vs eager,
#   fp32 and bf16).
# Stage 3 (box STAGE3_S=420 s): racecheck and synccheck passes, then the full benchmark sweep (every
#   dtype, torch.compile included).
# A step that does not fit in what is left of its stage's box is skipped and listed in $OUT/skipped.txt.
# The venv and the build tree live in $WORK (default /tmp/stqa-gpu-work); stages 2 and 3 rebuild there
# first when a fresh machine lacks them. Everything else lands in $OUT (default ./gpu_out) as it finishes: env.log, build.log, dist/, tests.log,
# tests.xml, sanitizer_<tool>.log, ops_cuda_key.{json,md}, ops_cuda_full.{json,md}, summary.txt.
# Needs: a CUDA torch, nvcc, cmake, ninja, scikit-build-core, pybind11; pytest (from .whl/ if it is not
# installed: pip install --no-index --find-links .whl pytest). Exit status 0 only if every step that ran passed.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$PWD/gpu_out}
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
PY=${PYTHON:-python3}
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(1 2)
status=0
echo "invocation: OUT=$OUT bash benchmarks/gpu_run.sh ${STAGES[*]}" | tee "$OUT/summary.txt"
: > "$OUT/skipped.txt"

log() { echo "== $* ($(date -u +%H:%M:%S))" | tee -a "$OUT/summary.txt"; }
skip() { echo "skipped: $*" | tee -a "$OUT/skipped.txt" "$OUT/summary.txt"; }
# run_step NAME MIN_SECONDS COMMAND...: runs COMMAND under `timeout` for what is left of the stage's
# box, or skips it when less than MIN_SECONDS are left.
run_step() {
  local name=$1 need=$2; shift 2
  local left=$((deadline - $(date +%s)))
  if [ "$left" -lt "$need" ]; then
    skip "$name (needs ~${need}s, ${left}s left in stage $stage)"
    return 0
  fi
  log "$name (up to ${left}s)"
  # the step is a shell function: run it in a child bash that `timeout` can stop
  timeout --kill-after=10 "$left" bash -c '"$@"' step "$@"
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    echo "TIMED OUT: $name after ${left}s" | tee -a "$OUT/summary.txt"; status=1
  elif [ $rc -ne 0 ]; then
    echo "FAILED: $name (exit $rc)" | tee -a "$OUT/summary.txt"; status=1
  else
    echo "ok: $name" >> "$OUT/summary.txt"
  fi
  return $rc
}

# The CUDA toolkit: $CUDA_HOME / $CUDA_PATH, /usr/local/cuda, or wherever nvcc really lives.
find_cuda_home() {
  local d
  for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
    if [ -n "$d" ] && [ -x "$d/bin/nvcc" ]; then echo "$d"; return; fi
  done
  if command -v nvcc > /dev/null; then dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")"; fi
}
CUDA_HOME_FOUND=$(find_cuda_home)
[ -n "$CUDA_HOME_FOUND" ] && export PATH="$CUDA_HOME_FOUND/bin:$PATH" CUDA_HOME="$CUDA_HOME_FOUND"
find_sanitizer() {
  local d
  for d in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
    [ -n "$d" ] || continue
    for f in "$d/bin/compute-sanitizer" "$d/compute-sanitizer/compute-sanitizer"; do
      if [ -x "$f" ]; then echo "$f"; return; fi
    done
  done
  command -v compute-sanitizer || true
}
SANITIZER=$(find_sanitizer)

# Installed into a venv that sees the system's torch (no second torch, nothing from the network), kept
# with the build tree outside $OUT so that neither is copied back with the results.
WORK=${WORK:-/tmp/stqa-gpu-work}
VENV=$WORK/venv
PIP_TARGET_FLAGS=()
activate() {
  if [ ! -x "$VENV/bin/python" ]; then
    if ! { mkdir -p "$WORK" && "$PY" -m venv --system-site-packages "$VENV"; }; then
      # no venv module: install for this user into the system python instead
      echo "python3 -m venv failed: installing with pip --user into $PY"
      export PIP_BREAK_SYSTEM_PACKAGES=1
      PIP_TARGET_FLAGS=(--user)
      return 0
    fi
  fi
  PY="$VENV/bin/python"
}

# Small forward/backward cases for compute-sanitizer: every dtype and score, 16-byte and scalar paths,
# fully masked rows, and L = 4000 (above 48 KiB of shared memory: the opt-in path).
SANITIZER_CASE=$OUT/sanitizer_case.py
cat > "$SANITIZER_CASE" <<'EOF'
import torch
from stqa.ops import attention_pool

torch.manual_seed(0)
cases = [(dt, s, C, K, 49) for dt in (torch.float32, torch.float16, torch.bfloat16, torch.float64)
         for s in ("additive", "dot", "cosine") for C, K in ((64, 32), (37, 19))]
cases.append((torch.float32, "additive", 16, 8, 4000))
for dtype, score, C, K, L in cases:
    v = torch.randn(2, 3, L, C, device="cuda", dtype=dtype, requires_grad=True)
    k = torch.randn(2, 3, L, K, device="cuda", dtype=dtype, requires_grad=True)
    q = torch.randn(2, K, device="cuda", dtype=dtype, requires_grad=True)
    w = torch.randn(K, device="cuda", dtype=dtype, requires_grad=True) if score == "additive" else None
    m = torch.rand(2, 3, L, device="cuda") > 0.3
    m[0, 0] = False
    p, a = attention_pool(v, k, q, w, m, score=score, scale=1.0 if score == "additive" else 0.5)
    (p.float().sum() + a.float().pow(2).sum()).backward()
torch.cuda.synchronize()
print("sanitizer case ok")
EOF
sanitize() {  # sanitize TOOL
  if [ -z "$SANITIZER" ]; then
    skip "compute-sanitizer $1: compute-sanitizer not found (looked in \$CUDA_HOME/bin, \$CUDA_PATH/bin, /usr/local/cuda/bin and PATH)"
    return 0
  fi
  (cd "$OUT" && PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$1" --error-exitcode 3 \
    --kernel-name kns=attention_pool "$PY" "$SANITIZER_CASE") > "$OUT/sanitizer_$1.log" 2>&1
  local rc=$?
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|sanitizer case ok" "$OUT/sanitizer_$1.log"
  return $rc
}

installed_ok() {  # the installed stqa (run from $OUT, so not the source tree) has its CUDA kernels
  (cd "$OUT" && "$PY" -c "import stqa, json; i = stqa.build_info(); print(json.dumps(i)); assert i['cuda'], 'built without CUDA'")
}

build_and_install() {
  {
    echo "CUDA toolkit: ${CUDA_HOME_FOUND:-not found}; compute-sanitizer: ${SANITIZER:-not found}"
    nvidia-smi || true
    nvcc --version || true
    cmake --version | head -1 || true
    "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
    "$PY" -c "import scikit_build_core, pybind11; print('scikit-build-core', scikit_build_core.__version__, 'pybind11', pybind11.__version__)"
  } > "$OUT/env.log" 2>&1
  cat "$OUT/env.log"
  mkdir -p "$OUT/dist"
  # The way scripts/check_install.py (CI) installs: an sdist, then a wheel built from that sdist with
  # --no-build-isolation against this machine's torch, for this GPU (sm_90) only. `build` may be missing
  # here: scikit-build-core's own sdist hook makes the same sdist.
  mkdir -p "$OUT/dist"
  { "$PY" -m build --sdist --no-isolation --outdir "$OUT/dist" "$REPO" \
      || (cd "$REPO" && "$PY" -c "from scikit_build_core.build import build_sdist; print(build_sdist('$OUT/dist'))"); \
  } > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; return 1; }
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$PY" -m pip wheel --no-build-isolation --no-deps --no-index -w "$OUT/dist" \
    --config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=90 --config-settings=build-dir="$WORK/build" \
    "$OUT"/dist/stqa-*.tar.gz >> "$OUT/build.log" 2>&1 \
    || { tail -40 "$OUT/build.log"; return 1; }
  "$PY" -m pip install $PIP_TARGET_FLAGS_STR --no-deps --no-index --force-reinstall "$OUT"/dist/stqa-*.whl >> "$OUT/build.log" 2>&1 \
    || { tail -20 "$OUT/build.log"; return 1; }
  if ! "$PY" -c "import pytest" 2> /dev/null; then
    "$PY" -m pip install $PIP_TARGET_FLAGS_STR --no-index --find-links "$REPO/.whl" pytest >> "$OUT/build.log" 2>&1 \
      || echo "pytest is not installed and not in .whl/: the test step will fail"
  fi
  grep -E "stqa: |Added CUDA NVCC flags" "$OUT/build.log" | head -5
  installed_ok | tee -a "$OUT/build.log"
}

run_tests() {
  (cd "$OUT" && "$PY" -m pytest -q -rs -p no:cacheprovider --junitxml="$OUT/tests.xml" \
    "$REPO/tests/test_ops_cuda.py" "$REPO/tests/test_ops.py" -m cuda) > "$OUT/tests.log" 2>&1
  local rc=$?
  tail -15 "$OUT/tests.log"
  return $rc
}

bench() {  # bench NAME ARGS...
  local name=$1; shift
  (cd "$OUT" && "$PY" "$REPO/benchmarks/bench_ops.py" --device cuda --out "$OUT/$name.json" --md "$OUT/$name.md" "$@") \
    > "$OUT/$name.log" 2>&1
  local rc=$?
  cat "$OUT/$name.log"
  return $rc
}

activate
# what the steps (child shells, see run_step) need; arrays do not export, hence the string
PIP_TARGET_FLAGS_STR="${PIP_TARGET_FLAGS[*]}"
export OUT PY REPO WORK VENV SANITIZER SANITIZER_CASE CUDA_HOME_FOUND PIP_TARGET_FLAGS_STR
export -f log skip sanitize installed_ok build_and_install run_tests bench

# stages 2 and 3 on a fresh machine (a later command) build and install first
ensure_installed() {
  installed_ok > /dev/null 2>&1 && return 0
  run_step "build and install" 60 build_and_install && installed_ok > /dev/null 2>&1
}

for stage in "${STAGES[@]}"; do
  case $stage in
    1)
      deadline=$(($(date +%s) + ${STAGE1_S:-270}))
      log "stage 1: build, CUDA tests, memcheck"
      run_step "build and install" 60 build_and_install || { echo "build failed: later steps need it"; break; }
      run_step "tests (test_ops_cuda.py, test_ops.py -m cuda)" 30 run_tests
      run_step "compute-sanitizer memcheck" 30 sanitize memcheck
      ;;
    2)
      deadline=$(($(date +%s) + ${STAGE2_S:-200}))
      log "stage 2: benchmarks at the key shapes"
      ensure_installed || continue
      run_step "bench key shapes (fused vs eager; fp32, bf16)" 40 bench ops_cuda_key \
        --impls fused eager --dtypes float32 bfloat16 --shapes tgifqa_spatial serving_spatial tgifqa_temporal
      ;;
    3)
      deadline=$(($(date +%s) + ${STAGE3_S:-420}))
      log "stage 3: racecheck, synccheck, full sweep"
      ensure_installed || continue
      run_step "compute-sanitizer racecheck" 60 sanitize racecheck
      run_step "compute-sanitizer synccheck" 30 sanitize synccheck
      run_step "bench full sweep (every dtype, torch.compile)" 120 bench ops_cuda_full
      ;;
    *) echo "unknown stage '$stage' (stages: 1 2 3)"; status=2 ;;
  esac
done

log "done (status $status); skipped: $(wc -l < "$OUT/skipped.txt")"
cat "$OUT/skipped.txt"
exit $status
