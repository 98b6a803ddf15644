#!/usr/bin/env bash
# The one prepared run for a lent GPU machine: environment, GPU tests, then the benchmark suite (the fused-kernel
# goal shapes first: rnnx-pallas beside torch cuDNN, the scan, cuDNN and flax), the kernels' layout search, the
# scan's unroll factors and XLA's while-loop command buffers, then the sweeps, most valuable part first, all within
# RNNX_DEVICE_TOTAL_SECONDS (default 470 s, under the 8 minutes a lent GPU allows inside its 10-minute command limit).
#
#   OUT=/path bash benchmarks/device.sh                     # on the GPU machine, from the repo root
#   JAX_PLATFORMS=cpu RNNX_DEVICE_REHEARSAL=1 OUT=/tmp/rehearsal bash benchmarks/device.sh   # rehearsal on a CPU
#
# Nothing is installed: rnnx runs from this tree (PYTHONPATH=.), with no network and no `datasets`.
# Each part runs under `timeout`, capped by the time left, so one slow part cannot eat the others; the
# benchmark parts also get --budget-seconds, skip (and record) the configurations left when it is spent,
# and rewrite their results after every configuration, so even a killed part keeps what it measured.
# Everything goes under $OUT (default ./device-out): logs/, parts/, the merged gpu-<device>.{md,json,png},
# scan_tuning-<device>.{json,md} and measured.json ("auto"'s table rows for this device, to merge into
# rnnx/core/backends/measured.json with `python -m benchmarks.auto_table`). In a rehearsal every shape is tiny,
# and the Pallas kernels run in Pallas's interpreter.
set -uo pipefail # no -e: a failing part is logged and the next one runs
cd "$(dirname "$0")/.."

OUT="${OUT:-./device-out}"
mkdir -p "$OUT/logs" "$OUT/parts"
OUT="$(cd "$OUT" && pwd)"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# JAX would take 75% of GPU memory at start; leave half to torch, which runs in the same process.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}"
PY="${PYTHON:-$(command -v python || command -v python3)}"
TOTAL="${RNNX_DEVICE_TOTAL_SECONDS:-470}"
RESERVE=40 # kept back for merging the report and writing auto's table rows at the end
BENCH=(--suite gpu)
TUNING=(--cells lstm,gru,simple_rnn --steps 1000,100 --modes train)
KERNELS=(--cells lstm,gru,simple_rnn --shapes 64x1000x128,64x100x128 --blocks 16,32 --warps 4,8 --stages 1,2 --repeats 5)
POPULATION=(--repeats 5)
if [[ "${RNNX_DEVICE_REHEARSAL:-0}" == "1" ]]; then
    BENCH+=(--tiny --repeats 2)
    TUNING=(--cells lstm,gru,simple_rnn --modes train --tiny)
    KERNELS=(--cells lstm,gru --tiny)
    POPULATION=(--tiny --repeats 2 --members 1,2,4)
fi
SUMMARY="$OUT/logs/summary.log"
: >"$SUMMARY"

say() { echo "[device $((SECONDS))s] $*" | tee -a "$SUMMARY"; }

# limit WANT: WANT seconds, or what is left of TOTAL after RESERVE if that is less.
limit() {
    local left=$((TOTAL - SECONDS - RESERVE))
    echo $(($1 < left ? $1 : left))
}

# part NAME SECONDS COMMAND...: COMMAND under `timeout SECONDS`, output to logs/NAME.log; shows its last $TAIL lines.
part() {
    local name=$1 seconds=$2 t0=$SECONDS rc
    shift 2
    if ((seconds < 20)); then
        say "$name: skipped, only $seconds s left"
        return
    fi
    say "$name: start (limit $seconds s): $*"
    timeout --kill-after=10 "$seconds" "$@" >"$OUT/logs/$name.log" 2>&1
    rc=$?
    say "$name: exit $rc after $((SECONDS - t0)) s$([[ $rc == 124 || $rc == 137 ]] && echo ' (timed out)')"
    tail -n "${TAIL:-4}" "$OUT/logs/$name.log" | sed "s/^/    /"
}

say "OUT=$OUT python=$PY total=${TOTAL}s rehearsal=${RNNX_DEVICE_REHEARSAL:-0}"
{
    nvidia-smi -L 2>&1 || echo "nvidia-smi: not available"
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 || true
    git rev-parse HEAD 2>/dev/null && git status --short 2>/dev/null | head -n 30
} >"$OUT/logs/device.log" 2>&1
cat "$OUT/logs/device.log"

TAIL=30 part versions "$(limit 60)" "$PY" - <<'EOF'
import importlib, platform, sys
print("python", sys.version.split()[0], platform.platform())
for name in ("jax", "jaxlib", "flax", "optax", "chex", "equinox", "orbax.checkpoint", "torch", "numpy", "rnnx"):
    try:
        module = importlib.import_module(name)
        print(name, getattr(module, "__version__", "?"), getattr(module, "__file__", ""))
    except Exception as error:  # report and go on: a missing package is what this line is for
        print(name, "NOT IMPORTABLE:", type(error).__name__, error)
import jax
print("jax backend", jax.default_backend(), [d.device_kind for d in jax.devices()])
try:
    import torch
    print("torch cuda", torch.cuda.is_available(), torch.version.cuda, torch.backends.cudnn.version(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
except Exception as error:
    print("torch:", type(error).__name__, error)
EOF

if [[ -f tests/test_gpu.py ]]; then
    part gpu-tests "$(limit 100)" "$PY" -m pytest -o addopts="" -q -m gpu tests/test_gpu.py -p no:cacheprovider \
        --junitxml="$OUT/logs/gpu-tests.xml"
else
    say "gpu-tests: tests/test_gpu.py is not in this tree; skipped"
fi

# The headline B=64 I=300 H=128, forward, forward+backward and training step: the goal cells (LSTM, GRU, simple
# RNN) in float32 at T=100 then T=1000 first (the fused-kernel goals), then the other cells, then bfloat16.
seconds=$(limit 165)
part bench-headline "$seconds" "$PY" -m benchmarks "${BENCH[@]}" --parts headline \
    --budget-seconds $((seconds - 45)) --out "$OUT/parts" --name "gpu-{device}-headline"

# The fused kernels' layout (batch rows per instance, Triton warps and stages), forward and training step, the
# T=1000 goal shape first: pallas_tuning-<device>.{json,md}.
seconds=$(limit 80)
part pallas-tuning "$seconds" "$PY" -m benchmarks.pallas_tuning "${KERNELS[@]}" --budget-seconds $((seconds - 25)) \
    --out "$OUT"

# The scan itself: unroll 1, 4, 8, 16 under XLA's default flags and with while loops as command buffers, one
# subprocess per flag setting (XLA reads its flags when JAX starts); the training step at T=1000 first, where the
# per-step cost shows (a setting's share of the time holds about one configuration: four compilations).
seconds=$(limit 100)
part scan-tuning "$seconds" "$PY" -m benchmarks.scan_tuning "${TUNING[@]}" --budget-seconds $((seconds - 10)) \
    --out "$OUT"

# Population training (issue 24): time per update against N = 1..32 members in one vmapped step, the classifier
# first (its goal: 16 members in at most 1.5x one member's time), then the language model.
seconds=$(limit 70)
TAIL=12 part population "$seconds" "$PY" -m benchmarks.population "${POPULATION[@]}" \
    --budget-seconds $((seconds - 35)) --out "$OUT"

# Sweeps, forward and training step: H (512 and 1024 hold the bfloat16 goal) first, then T=10000, then B.
seconds=$(limit 100)
part bench-sweeps "$seconds" "$PY" -m benchmarks "${BENCH[@]}" --parts hidden,steps,batch \
    --budget-seconds $((seconds - 45)) --out "$OUT/parts" --name "gpu-{device}-sweeps"

RESERVE=0
part report "$(limit 60)" "$PY" -m benchmarks.report "$OUT"/parts/gpu-*.json --out "$OUT" --name "gpu-{device}"
part auto-table "$(limit 30)" "$PY" -m benchmarks.auto_table "$OUT"/gpu-*.json --out "$OUT/measured.json"
say "done in $SECONDS s; files:"
(cd "$OUT" && find . -type f | sort | sed "s/^/    /")
# The goals and the LSTM kernel counts, so that they show in the tail of this command's output.
report=$(ls "$OUT"/gpu-*.md 2>/dev/null | head -n 1)
if ! ls "$OUT"/gpu-*.png >/dev/null 2>&1; then
    say "no plot here (matplotlib missing?): python -m benchmarks.report <OUT>/parts/*.json --out benchmarks/results"
fi
if [[ -n "$report" ]]; then
    sed -n '/^## Goals/,/^| goal/p' "$report" | head -n 20
    grep -E '^\| pallas-' "$report" | head -n 30
    sed -n '/^## Per time step/,/^## Where the time goes/p' "$report" | grep -E '^\| (lstm|gru|simple_rnn) \| float32' |
        head -n 30
fi
kernels=$(ls "$OUT"/pallas_tuning-*.md 2>/dev/null | head -n 1)
if [[ -n "$kernels" ]]; then
    grep -E '^\| ' "$kernels" | head -n 14
fi
tuning=$(ls "$OUT"/scan_tuning-*.md 2>/dev/null | head -n 1)
if [[ -n "$tuning" ]]; then
    sed -n '/^Faster than the default scan/,$p' "$tuning" | head -n 12
fi
