#!/usr/bin/env bash
# Issue 24: the body of ONE device call (nvidia-h200): install the carried peer wheels, run the
# test suite on CUDA, then benchmarks/gpu.py; everything is logged under $OUT. Run from the repo
# root with `.whl` carried:  run(command="bash benchmarks/gpu_device.sh", carry=[".whl"],
# timeout_s=560). Worst case about 8.5 minutes: install ~10 s, tests <= PYSNN_TESTS_S (150 s),
# benchmarks <= PYSNN_BENCH_HARD_S (360 s; gpu.py stops starting cases after PYSNN_BENCH_BUDGET_S).
# Knobs (environment, all optional): PYSNN_DEVICE_TESTS=0 skips the tests (a re-run of the
# benchmarks only), PYSNN_TESTS_S, PYSNN_PYTEST_ARGS, PYSNN_BENCH_BUDGET_S, PYSNN_BENCH_HARD_S,
# PYSNN_BENCH_ARGS (extra gpu.py options, e.g. "--suites on").
set -u -o pipefail
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
stamp() { echo "== [$(($(date +%s) - T0)) s] $*"; }

{
  stamp "install carried wheels into /tmp/site"
  if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site .whl/*.whl || echo "WARNING: wheel install failed; peers will be missing"
  else
    echo "WARNING: no .whl folder (carry [\".whl\"]); peers will be missing"
  fi
  export PYTHONPATH="/tmp/site:$PWD"
  stamp "machine"
  nvidia-smi -L
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  echo "compilers: gcc=$(command -v gcc || echo none) cc=$(command -v cc || echo none) nvcc=$(command -v nvcc || echo none)"
  nproc
  python3 - <<'PY'
import importlib, platform
import torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
for name in ("triton", "cupy", "snntorch", "norse", "spikingjelly", "nir", "nirtorch", "numpy", "pysnn"):
    try:
        mod = importlib.import_module(name)
        print(f"{name:12s} {getattr(mod, '__version__', '?'):12s} {getattr(mod, '__file__', '')}")
    except Exception as err:  # noqa: BLE001
        print(f"{name:12s} NOT IMPORTABLE: {type(err).__name__}: {err}")
import pysnn.backends as b
print("pysnn backend preference", b.preference(), {n: b.get(n) is not None for n in b.registered()})
PY
} 2>&1 | tee "$OUT/env.log"

export PYTHONPATH="/tmp/site:$PWD"
if [ "${PYSNN_DEVICE_TESTS:-1}" != "0" ]; then
  stamp "tests on CUDA (cap ${PYSNN_TESTS_S:-150} s)" | tee "$OUT/tests.log"
  PYSNN_TEST_DEVICE=cuda timeout -k 10 "${PYSNN_TESTS_S:-150}" python3 -m pytest -q -n 8 tests/ \
    --timeout 60 -p no:cacheprovider -rfE --junitxml="$OUT/tests.xml" \
    ${PYSNN_PYTEST_ARGS:---maxfail=200} 2>&1 | tail -c 4000000 >>"$OUT/tests.log"
  echo "pytest exit status: ${PIPESTATUS[0]} (124: stopped by the time cap)" | tee -a "$OUT/tests.log"
  grep -E "passed|failed|error" "$OUT/tests.log" | tail -3
fi

stamp "benchmarks/gpu.py (budget ${PYSNN_BENCH_BUDGET_S:-300} s, hard cap ${PYSNN_BENCH_HARD_S:-360} s)"
PYSNN_BACKEND=auto timeout -k 10 "${PYSNN_BENCH_HARD_S:-360}" python3 benchmarks/gpu.py \
  --out "$OUT" --budget-s "${PYSNN_BENCH_BUDGET_S:-300}" ${PYSNN_BENCH_ARGS:-} 2>&1 | tee "$OUT/bench.log"
echo "gpu.py exit status: ${PIPESTATUS[0]}"
stamp "done"
