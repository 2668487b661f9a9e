#!/usr/bin/env bash
# Issue #10's prepared GPU run: the cuda-marked tests and the speed measurements, in one go.
#
#   tools/gpu_bundle.sh                  # here, first: golden files and torchfile into .gpu_bundle/ (ignored by git)
#   tools/gpu_check.sh OUTDIR            # on the GPU machine, from a checkout that carries .gpu_bundle/
#   tools/gpu_check.sh OUTDIR --dry-run  # anywhere: every stage at toy sizes on the CPU (plumbing, not results)
#
# Stages, most important first, each with its own time limit and all of them within GPU_CHECK_SECONDS (default
# 450; a stage that would start with less than 20 s left is skipped), so that a slow stage loses the least:
#   env            GPU, driver, torch, triton versions
#   main-epoch     main.py on a CIFAR-10-sized epoch (50,000 synthetic images in the real file format) with the
#                  README's command, -bnSplit 4 and the fast options; images/s from log.csv
#   pytest-cuda    pytest -m cuda over the whole repository (150 s per test where pytest-timeout is installed)
#   bench-fp32     bench.py gunn-15, batch 64 and 256: plain and share paths, eager and CUDA graph, float32
#   bench-triton   the same for the fused Triton path (-kernels triton), with the plain baseline of its own run
#   profile        the 15 kernels of most device time in the share and triton paths' gunn-15 step, batch 64
#   grid-sweep     the triton path's gunn-15 step for 2, 4 and 16 persistent programs per SM, and with two other
#                  launch settings (8 warps; half the pixel tiles), as CUDA graphs
#   bench-gunn18   gunn-18 at 224x224, batch 64: every path, eager and CUDA graph, float32
#   bench-bnsplit  share and triton paths as CUDA graphs at batch 64 with -bnSplit 4 (as the main-epoch command)
#   bench-bf16     share and triton paths as CUDA graphs in bf16 autocast, NCHW and channels_last
# Writes OUTDIR/<stage>.log, bench-*.json, profile-gunn15.json, main-epoch/ (log.csv, run.json, the run's output),
# stages.tsv, summary.txt and summary.json, packs them all into OUTDIR/gpu_check.tgz as well, and prints the
# summary table last. A stage stopped at its limit gets SIGABRT first, so that Python prints where every thread
# was (PYTHONFAULTHANDLER).
set -u
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: tools/gpu_check.sh OUTDIR [--dry-run]" >&2
    exit 2
fi
OUT=$(realpath -m "$1")
DRY=0
[ "${2:-}" = "--dry-run" ] && DRY=1
mkdir -p "$OUT"
: > "$OUT/stages.tsv"
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
export PYTHON
export PYTHONFAULTHANDLER=1
[ -d .gpu_bundle/python ] && export PYTHONPATH="$PWD/.gpu_bundle/python${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
SCALE=1  # of the stage limits
[ $DRY = 1 ] && SCALE=4
DEADLINE=$((START + ${GPU_CHECK_SECONDS:-$((450 * SCALE))}))
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export WORK OUT

if [ $DRY = 1 ]; then  # toy sizes on the CPU (gunn-mini for gunn-15)
    BENCH15=(-netType gunn-mini -batchSizes 2 -steps 1 -rounds 1 -warmup 1 -device cpu)
    SMALL_BATCH=2
    BENCH18=(-netType gunn-18 -batchSizes 1 -steps 1 -rounds 1 -warmup 0 -device cpu)
    export EPOCH_NET=gunn-mini EPOCH_IMAGES=256 EPOCH_TEST_IMAGES=64 EPOCH_DEVICE=cpu
else
    BENCH15=(-netType gunn-15 -batchSizes 64,256)
    SMALL_BATCH=64
    BENCH18=(-netType gunn-18 -batchSizes 64 -steps 5 -warmup 5)
    export EPOCH_NET=gunn-15 EPOCH_IMAGES=50000 EPOCH_TEST_IMAGES=10000 EPOCH_DEVICE=cuda
fi

# stage NAME LIMIT COMMAND...: runs COMMAND with its output in OUTDIR/NAME.log, within LIMIT and the deadline
stage() {
    local name=$1 limit=$(($2 * SCALE))
    shift 2
    local left=$((DEADLINE - $(date +%s) - 5))
    if [ $left -lt 20 ]; then
        printf '%s\tnot run (out of time)\t0\t-\n' "$name" >> "$OUT/stages.tsv"
        echo "== $name: not run (out of time)"
        return
    fi
    [ "$limit" -gt $left ] && limit=$left
    echo "== $name (at most ${limit}s): $*"
    local begin rc status
    begin=$(date +%s)
    timeout -s ABRT -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    case $rc in
        0) status=ok ;;
        124|134|137) status="stopped at ${limit}s" ;;
        *) status="failed (exit $rc)" ;;
    esac
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" $(($(date +%s) - begin)) "$rc" >> "$OUT/stages.tsv"
    echo "   $status after $(($(date +%s) - begin))s; last lines:"
    tail -n 4 "$OUT/$name.log" | sed 's/^/   | /'
}

env_report() {
    nvidia-smi 2>&1 || echo 'nvidia-smi: not available'
    "$PYTHON" - <<'PY'
import platform, os, torch
print('python', platform.python_version(), '| torch', torch.__version__, '| CUDA', torch.version.cuda,
      '| cuDNN', torch.backends.cudnn.version() if torch.cuda.is_available() else None)
print('GPUs:', [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())], '| CPU cores:', os.cpu_count())
try:
    import triton
    print('triton', triton.__version__)
except ImportError:
    print('triton: not installed')
for name in ('torchfile', 'matplotlib', 'sklearn', 'tqdm', 'onnx', 'onnxruntime', 'pytest'):
    try:
        __import__(name)
        print(name, 'ok')
    except ImportError:
        print(name, 'missing')
PY
}
export -f env_report

# The README's CIFAR-10 command with -bnSplit 4 for one epoch; the fastest options this build has, falling back
# to fewer if a run fails (the log says which options each attempt used). Each attempt is stopped after
# EPOCH_SECONDS; log.csv is kept even from an attempt that fails or hangs after its epoch, and run.json says how
# long the whole process took (a slow exit shows as the difference to log.csv's seconds).
main_epoch() {
    "$PYTHON" tools/make_cifar.py "$WORK/cifar" -train "$EPOCH_IMAGES" -test "$EPOCH_TEST_IMAGES" || return 1
    local fast=(-cudaGraph true)
    "$PYTHON" main.py -help 2>/dev/null | grep -q -- '-kernels' && fast+=(-kernels triton)
    local attempts=("${fast[*]}" "-cudaGraph true" "")
    [ ${#fast[@]} = 2 ] && attempts=("${fast[*]}" "")
    mkdir -p "$OUT/main-epoch"
    local options begin rc
    for options in "${attempts[@]}"; do
        echo "--- main.py with options: ${options:-(none)}"
        rm -rf "$WORK/save"
        begin=$(date +%s)
        # shellcheck disable=SC2086
        timeout -s ABRT -k 5 "$EPOCH_SECONDS" "$PYTHON" main.py -netType "$EPOCH_NET" -dataset cifar10 \
            -batchSize 64 -bnSplit 4 -nEpochs 1 -data "$WORK/cifar" -gen "$WORK/gen" -save "$WORK/save" -nThreads 8 \
            -device "$EPOCH_DEVICE" $options > "$OUT/main-epoch/output.txt" 2>&1
        rc=$?
        [ -f "$WORK/save/log.csv" ] && cp "$WORK/save/log.csv" "$OUT/main-epoch/log.csv"
        printf '{"options": "%s", "images": %d, "exit_code": %d, "process_seconds": %d}\n' "$options" \
            "$EPOCH_IMAGES" $rc $(($(date +%s) - begin)) > "$OUT/main-epoch/run.json"
        tail -n 3 "$OUT/main-epoch/output.txt"
        [ $rc = 0 ] && return 0
    done
    return 1
}
export -f main_epoch

PYTEST_TIMEOUT=()  # one slow test must not use up the stage (pytest-timeout, where installed)
"$PYTHON" -c 'import pytest_timeout' 2>/dev/null && PYTEST_TIMEOUT=(--timeout 150)

stage env 30 bash -c env_report
export EPOCH_SECONDS=$((130 * SCALE))
stage main-epoch 150 bash -c main_epoch
if [ $DRY = 1 ]; then  # the cuda tests skip on the CPU: collect them all, show the reasons
    stage pytest-cuda 200 "$PYTHON" -m pytest -m cuda -v -rs -p no:cacheprovider --continue-on-collection-errors
else
    stage pytest-cuda 240 "$PYTHON" -m pytest -m cuda -v -rs -p no:cacheprovider --continue-on-collection-errors \
        --durations=15 --junitxml="$OUT/pytest-cuda.xml" "${PYTEST_TIMEOUT[@]}"
fi
stage bench-fp32 150 "$PYTHON" -m benchmarks.bench "${BENCH15[@]}" -paths plain,share -exec eager,graph -precision single \
    -json "$OUT/bench-gunn15-fp32.json"
stage bench-triton 150 "$PYTHON" -m benchmarks.bench "${BENCH15[@]}" -paths triton -exec eager,graph -precision single \
    -json "$OUT/bench-gunn15-triton.json"
# where the step's time goes: the kernels of the share and triton paths, eager (a graph replays the same ones)
stage profile 90 "$PYTHON" -m benchmarks.bench "${BENCH15[@]}" -batchSizes $SMALL_BATCH -paths share,triton -exec eager \
    -precision single -profile 15 -json "$OUT/profile-gunn15.json"
stage grid-sweep 150 "$PYTHON" benchmarks/fused_grid_sweep.py "${BENCH15[@]}" -exec graph -precision single
stage bench-gunn18 120 "$PYTHON" -m benchmarks.bench "${BENCH18[@]}" -paths plain,share,triton -exec eager,graph \
    -precision single -json "$OUT/bench-gunn18-fp32.json"
stage bench-bnsplit 60 "$PYTHON" -m benchmarks.bench "${BENCH15[@]}" -batchSizes $SMALL_BATCH -paths share,triton -exec graph \
    -precision single -bnSplit 4 -json "$OUT/bench-gunn15-bnsplit4.json"
stage bench-bf16 120 "$PYTHON" -m benchmarks.bench "${BENCH15[@]}" -paths share,triton -exec graph -precision bf16 \
    -layout nchw,nhwc -json "$OUT/bench-gunn15-bf16.json"

echo "== total $(($(date +%s) - START))s"
"$PYTHON" tools/gpu_summary.py "$OUT" | tee "$OUT/summary.txt"
# everything in one file too, for hosts that hand back only a few files
tar czf "$WORK/gpu_check.tgz" -C "$OUT" . && mv "$WORK/gpu_check.tgz" "$OUT/"
