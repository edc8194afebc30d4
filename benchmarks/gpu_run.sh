#!/usr/bin/env bash
# GPU validation and benchmark of the fused attention-pooling op, for a machine with a CUDA GPU, a
# CUDA build of torch, nvcc, scikit-build-core and pybind11 (run from the repository root):
#
#   OUT=/some/dir benchmarks/gpu_run.sh
#
# 1. builds and installs stqa against the local torch (no build isolation: it would fetch another
#    torch) with the CUDA kernels, 2. runs the CUDA, CPU and nvcc op tests, 3. runs compute-sanitizer
#    memcheck, racecheck and synccheck over a small forward/backward script (every dtype, masks,
#    fully masked rows, vector and scalar paths), 4. runs benchmarks/bench_ops.py --device cuda.
# Logs and results go to $OUT (default ./gpu_out): env.log, build.log, tests.log, sanitizer.log,
# bench.log, ops_cuda.json, ops_cuda.md. Exit status: 0 only if every step passed.
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$PWD/gpu_out}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PATH="$PATH:/usr/local/cuda/bin"
status=0
step() { echo "== $1 ($(date -u +%H:%M:%S))"; }

step "environment"
{
  nvidia-smi || true
  nvcc --version || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
  "$PY" -c "import scikit_build_core, pybind11; print('scikit-build-core', scikit_build_core.__version__, 'pybind11', pybind11.__version__)"
} > "$OUT/env.log" 2>&1
cat "$OUT/env.log"
if ! "$PY" -c "import scikit_build_core, pybind11" 2>/dev/null; then
  echo "scikit-build-core and pybind11 are needed to build (carry their wheels: see the device README)"
  exit 2
fi

step "build (pip install --no-build-isolation --no-deps .)"
if ! (cd "$REPO" && "$PY" -m pip install --no-build-isolation --no-deps -v . > "$OUT/build.log" 2>&1); then
  tail -40 "$OUT/build.log"
  echo "build failed"
  exit 1
fi
# run from $OUT so that `import stqa` finds the installed package (with _C), not the source tree
cd "$OUT" || exit 1
"$PY" -c "import stqa, json; info = stqa.build_info(); print(json.dumps(info)); assert info['cuda'], 'built without CUDA'" \
  | tee -a "$OUT/build.log" || { echo "stqa was built without its CUDA kernels"; exit 1; }

step "tests"
"$PY" -m pytest -q -rs "$REPO/tests/test_ops_cuda.py" "$REPO/tests/test_ops.py" "$REPO/tests/test_ops_nvcc.py" \
  "$REPO/tests/test_nn.py" -p no:cacheprovider > "$OUT/tests.log" 2>&1 || status=1
tail -5 "$OUT/tests.log"

step "compute-sanitizer"
case_py=$(mktemp --suffix=.py)
cat > "$case_py" <<'EOF'
import torch
from stqa.ops import attention_pool

torch.manual_seed(0)
for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
    for score in ("additive", "dot", "cosine"):
        for C, K in ((64, 32), (37, 19)):  # 16-byte vector path, scalar path
            v = torch.randn(2, 3, 49, C, device="cuda", dtype=dtype, requires_grad=True)
            k = torch.randn(2, 3, 49, K, device="cuda", dtype=dtype, requires_grad=True)
            q = torch.randn(2, K, device="cuda", dtype=dtype, requires_grad=True)
            w = torch.randn(K, device="cuda", dtype=dtype, requires_grad=True) if score == "additive" else None
            m = torch.rand(2, 3, 49, device="cuda") > 0.3
            m[0, 0] = False
            p, a = attention_pool(v, k, q, w, m, score=score, scale=1.0 if score == "additive" else 0.5)
            (p.float().sum() + a.float().pow(2).sum()).backward()
torch.cuda.synchronize()
print("sanitizer case ok")
EOF
: > "$OUT/sanitizer.log"
for tool in memcheck racecheck synccheck; do
  echo "-- $tool" >> "$OUT/sanitizer.log"
  PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool "$tool" --error-exitcode 3 \
    --kernel-name kns=attention_pool "$PY" "$case_py" >> "$OUT/sanitizer.log" 2>&1 || status=1
done
rm -f "$case_py"
grep -E "^-- |ERROR SUMMARY|RACECHECK SUMMARY|sanitizer case ok" "$OUT/sanitizer.log"

step "benchmark"
"$PY" "$REPO/benchmarks/bench_ops.py" --device cuda --out "$OUT/ops_cuda.json" --md "$OUT/ops_cuda.md" \
  > "$OUT/bench.log" 2>&1 || status=1
cat "$OUT/bench.log"

step "done (status $status)"
exit $status
