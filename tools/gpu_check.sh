#!/usr/bin/env bash
# Issue #10's prepared GPU run: the measurements, the cuda-marked tests and main.py's epoch, in one go.
#
#   tools/gpu_bundle.sh                  # here, first: torchfile into .gpu_bundle/ (ignored by git)
#   tools/gpu_check.sh OUTDIR            # on the GPU machine, from a checkout that carries .gpu_bundle/
#   tools/gpu_check.sh OUTDIR --dry-run  # anywhere: every stage at toy sizes on the CPU (plumbing, not results)
#
# Stages, most important first, each with its own time limit and all of them within GPU_CHECK_SECONDS (default
# 560, about 9.5 minutes: the device tool allows 10 per command; a stage that would start with less than 20 s
# left is skipped), so that a slow stage loses the least:
#   env                 GPU, driver, torch, triton versions
#   profile             benchmarks/gpu_profile.py: per-kernel device times of each gunn-15 layer shape and of the
#                       whole step (share, triton, triton2) against their graph replay times, the cost of a kernel
#                       boundary in a graph (with and without PDL), copy bandwidth, the A/B of version 1's
#                       switches (relaxed atomics; num_stages=3 with half tiles), the pipelining this GPU's Triton
#                       compiled; profile.json, its summary at the end of profile.log
#   bench               bench.py gunn-15, batch 64 and 256: plain, share, triton and triton2, eager and CUDA graph,
#                       float32, the plain eager baseline measured first in the same run
#   pytest-cuda         pytest -m cuda over the whole repository (150 s per test where pytest-timeout is installed)
#   main-epoch-triton2  main.py on a CIFAR-10-sized epoch (50,000 synthetic images in the real file format),
#                       -bnSplit 4 -cudaGraph true -kernels triton2; images/s from log.csv
#   main-epoch-triton   the same with -kernels triton (version 1)
#   bench-gunn18        gunn-18 at 224x224, batch 64: every path, CUDA graph, float32 (when time is left)
# Writes OUTDIR/<stage>.log, profile.json, bench-*.json, main-epoch-*/ (log.csv, run.json, the run's output),
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
DEADLINE=$((START + ${GPU_CHECK_SECONDS:-$((560 * SCALE))}))
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export WORK OUT

if [ $DRY = 1 ]; then  # toy sizes on the CPU (gunn-mini for gunn-15; the fused profile under the interpreter)
    BENCH15=(-netType gunn-mini -batchSizes 2 -steps 1 -rounds 1 -warmup 1 -device cpu)
    BENCH18=(-netType gunn-18 -batchSizes 1 -steps 1 -rounds 1 -warmup 0 -device cpu)
    PROFILE=(env TRITON_INTERPRET=1 "$PYTHON" -m benchmarks.gpu_profile -dry-run)
    export EPOCH_NET=gunn-mini EPOCH_IMAGES=256 EPOCH_TEST_IMAGES=64 EPOCH_DEVICE=cpu
else
    BENCH15=(-netType gunn-15 -batchSizes 64,256 -steps 8 -warmup 5)
    BENCH18=(-netType gunn-18 -batchSizes 64 -steps 5 -warmup 5)
    PROFILE=("$PYTHON" -m benchmarks.gpu_profile)
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

# The README's CIFAR-10 command with -bnSplit 4 -cudaGraph true -kernels KERNELS for one epoch (the data made
# once, for both epoch stages), within the stage's limit; log.csv is kept even from a run that fails or hangs after
# its epoch, and run.json says how long the whole process took (a slow exit shows as the difference to log.csv's
# seconds).
main_epoch() {
    local kernels=$1 dir="$OUT/main-epoch-$1" options="-cudaGraph true -kernels $1" begin rc
    [ -d "$WORK/cifar" ] || "$PYTHON" tools/make_cifar.py "$WORK/cifar" -train "$EPOCH_IMAGES" -test "$EPOCH_TEST_IMAGES" \
        || return 1
    mkdir -p "$dir"
    rm -rf "$WORK/save-$kernels"
    begin=$(date +%s)
    # shellcheck disable=SC2086
    "$PYTHON" main.py -netType "$EPOCH_NET" -dataset cifar10 -batchSize 64 -bnSplit 4 -nEpochs 1 -data "$WORK/cifar" \
        -gen "$WORK/gen" -save "$WORK/save-$kernels" -nThreads 8 -device "$EPOCH_DEVICE" $options > "$dir/output.txt" 2>&1
    rc=$?
    [ -f "$WORK/save-$kernels/log.csv" ] && cp "$WORK/save-$kernels/log.csv" "$dir/log.csv"
    printf '{"options": "%s", "images": %d, "exit_code": %d, "process_seconds": %d}\n' "$options" "$EPOCH_IMAGES" $rc \
        $(($(date +%s) - begin)) > "$dir/run.json"
    tail -n 3 "$dir/output.txt"
    return $rc
}
export -f main_epoch

PYTEST_TIMEOUT=()  # one slow test must not use up the stage (pytest-timeout, where installed)
"$PYTHON" -c 'import pytest_timeout' 2>/dev/null && PYTEST_TIMEOUT=(--timeout 150)

stage env 15 bash -c env_report
stage profile 160 "${PROFILE[@]}" -json "$OUT/profile.json" -seconds $((150 * SCALE))
stage bench 100 "$PYTHON" -m benchmarks.bench "${BENCH15[@]}" -paths plain,share,triton,triton2 -exec eager,graph \
    -precision single -json "$OUT/bench-gunn15-fp32.json"
if [ $DRY = 1 ]; then  # the cuda tests skip on the CPU: collect them all, show the reasons
    stage pytest-cuda 200 "$PYTHON" -m pytest -m cuda -v -rs -p no:cacheprovider --continue-on-collection-errors
else
    stage pytest-cuda 170 "$PYTHON" -m pytest -m cuda -v -rs -p no:cacheprovider --continue-on-collection-errors \
        --durations=15 --junitxml="$OUT/pytest-cuda.xml" "${PYTEST_TIMEOUT[@]}"
fi
stage main-epoch-triton2 45 bash -c 'main_epoch triton2'
stage main-epoch-triton 50 bash -c 'main_epoch triton'
stage bench-gunn18 60 "$PYTHON" -m benchmarks.bench "${BENCH18[@]}" -paths plain,share,triton,triton2 -exec graph \
    -precision single -json "$OUT/bench-gunn18-fp32.json"

echo "== total $(($(date +%s) - START))s"
"$PYTHON" tools/gpu_summary.py "$OUT" | tee "$OUT/summary.txt"
# everything in one file too, for hosts that hand back only a few files
tar czf "$WORK/gpu_check.tgz" -C "$OUT" . && mv "$WORK/gpu_check.tgz" "$OUT/"
