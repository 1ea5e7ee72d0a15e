#!/usr/bin/env bash
# One GPU check of speechjax, in one call of about 7 minutes on a fresh GPU machine with
# no network: the device and versions, every model's train step (float32 and bfloat16,
# batch 32 and 256; examples/s, ms/step, FLOPs, MFU), the JAX inference function, and
# PyTorch's eager ResNet18 step beside speechjax's. Everything printed is also written to
# $OUT (default ./gpu_out): gpu_check.log, train_steps.jsonl, inference.jsonl, summary.md,
# torch_steps.jsonl.
#
#   bash benchmarks/gpu_check.sh
#
# Python packages the machine lacks can come as wheels in $WHEELS (default .whl): they are
# installed with --no-deps into /tmp/site, which goes first on PYTHONPATH. The README
# ("On a GPU") says what was measured with this and what cannot run without TensorFlow.
# Environment: PARTS (default "steps torch"), the parts to run, of: tests (the test files
# that need neither TensorFlow nor audio decoding, on the GPU: models, optimisers, configs,
# detection), steps (gpu_check.py), torch (PyTorch's ResNet18 beside speechjax's) and
# vs_pytorch (benchmarks/vs_pytorch.py, every model, float32 and bfloat16; VS_SECONDS,
# default 240, for both); JAX_SECONDS (default 330) for the JAX part, TORCH_SECONDS (45) for PyTorch,
# COMPILE_WORKERS (5) processes compiling into JAX's persistent cache first, and
# GPU_CHECK_ARGS, extra arguments to gpu_check.py (--smoke: tiny runs, to test this script;
# --select PATTERNS: some runs only), TORCH_ARGS, extra arguments to torch_resnet.py.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}
JAX_SECONDS=${JAX_SECONDS:-330}
TORCH_SECONDS=${TORCH_SECONDS:-45}
COMPILE_WORKERS=${COMPILE_WORKERS:-5}
PARTS=${PARTS:-steps torch}
VS_SECONDS=${VS_SECONDS:-240}
part() { [[ " $PARTS " == *" $1 "* ]]; }
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
# JAX takes GPU memory as it needs it, so the compile workers and PyTorch fit beside it.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/speechjax-gpu-check-cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
t0=$(date +%s)
stamp() { echo "== $* (t=$(($(date +%s) - t0)) s)"; }

main() {

stamp "device"
nvidia-smi || echo "nvidia-smi: not available"
uname -srm
nproc

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  "$PY" -c "
import importlib.metadata as md
for name in ('flax', 'optax', 'ml-collections'):
    try:
        print('the machine has', name, md.version(name))
    except md.PackageNotFoundError:
        print('the machine lacks', name)"
  stamp "installing $(ls "$WHEELS" | tr '\n' ' ')"
  site=/tmp/site
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" "$WHEELS"/*.whl; then
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    # The pinned flax/optax must import and differentiate an NNX module with this jax;
    # otherwise the machine's own versions are used.
    if ! "$PY" -c "
import jax, jax.numpy as jnp, ml_collections, optax
from flax import nnx
m = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
g = nnx.grad(lambda m: m(jnp.ones((1, 2))).sum())(m)
print('carried wheels work with jax', jax.__version__)"; then
      echo "the carried wheels do not work here; keeping only ml_collections"
      rm -rf "$site" && "$PY" -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --target "$site" "$WHEELS"/ml_collections-*.whl
    fi
  else
    echo "pip could not install the wheels"
  fi
fi

stamp "versions"
"$PY" - <<'EOF'
import importlib.metadata as md
import platform

print("python", platform.python_version())
names = ["jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax",
         "orbax-checkpoint", "ml-collections", "numpy", "scipy", "absl-py", "torch",
         "torchvision", "tensorflow", "tensorflow-cpu", "tensorflow-datasets", "librosa",
         "soundfile", "espeakng-loader"]
missing = []
for name in names:
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        missing.append(name)
print("not installed:", ", ".join(missing) or "none")
import jax  # noqa: E402

print("jax.devices():", jax.devices())
print("device_kind:", jax.devices()[0].device_kind)
EOF
for module in tensorflow soundfile librosa; do
  "$PY" -c "import $module" 2>/dev/null ||
    echo "no $module here: the test suite (its conftest imports soundfile and pins JAX to" \
      "the CPU), the tf.data input pipeline and the demo training cannot run"
done

if part tests; then
  stamp "tests on the GPU (those that need no TensorFlow)"
  # conftest pins JAX to the CPU unless JAX_PLATFORMS is set.
  JAX_PLATFORMS=cuda timeout 200 "$PY" -m pytest -p no:cacheprovider -p no:warnings -q \
    tests/test_models.py tests/test_optim.py tests/test_configs.py tests/test_detection.py \
    tests/test_early_stopping.py 2>&1 | tail -n 25 ||
    echo "the tests ended with status $?"
fi

if part steps; then
stamp "speechjax train steps and inference (JAX, budget ${JAX_SECONDS} s)"
# shellcheck disable=SC2086  # GPU_CHECK_ARGS is a list of words
timeout $((JAX_SECONDS + 90)) "$PY" benchmarks/gpu_check.py --out "$OUT" \
  --deadline "$JAX_SECONDS" --compile-workers "$COMPILE_WORKERS" --min-time 0.3 \
  ${GPU_CHECK_ARGS:-} ||
  echo "gpu_check.py ended with status $?"
fi

if part vs_pytorch; then
  for dtype in float32 bfloat16; do
    stamp "vs_pytorch.py, $dtype (budget $((VS_SECONDS / 2)) s)"
    timeout $((VS_SECONDS / 2)) "$PY" benchmarks/vs_pytorch.py --dtype "$dtype" \
      --repeats 5 --min-time 0.3 ${VS_ARGS:-} | tee "$OUT/vs_pytorch_$dtype.txt" ||
      echo "vs_pytorch.py ($dtype) ended with status $?"
  done
fi

if part torch; then
stamp "PyTorch eager ResNet18 (budget ${TORCH_SECONDS} s)"
if "$PY" -c "import torch, torchvision" 2>/dev/null; then
  # shellcheck disable=SC2086  # TORCH_ARGS is a list of words
  timeout $((TORCH_SECONDS + 60)) "$PY" benchmarks/torch_resnet.py --deadline "$TORCH_SECONDS" \
    --min-time 0.3 --out "$OUT/torch_steps.jsonl" --jax-results "$OUT/train_steps.jsonl" \
    ${TORCH_ARGS:-} ||
    echo "torch_resnet.py ended with status $?"
else
  echo "torch/torchvision not importable: PyTorch baseline skipped"
fi
fi

stamp "device state after the runs"
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu,memory.used \
  --format=csv 2>/dev/null || true
stamp "summary"
cat "$OUT/summary.md" 2>/dev/null || echo "no summary"
stamp "done"
}

main 2>&1 | tee -a "$OUT/gpu_check.log"
