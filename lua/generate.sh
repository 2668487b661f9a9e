#!/usr/bin/env bash
# Generate a golden set by running the unmodified GUNN Lua code under a CPU Torch7.
#
#   lua/generate.sh GUNN_DIR OUTDIR [--compact|--full] [--th TH] [--only CASE,...] [--python PY]
#                   [--inputs-from SET_DIR] [--keep-work]
#
#   GUNN_DIR   a checkout of joe-siyuan-qiao/GUNN (7e7aa93), used unmodified
#   OUTDIR     receives NAME.json + NAME.bin (+ .t7) per case and the manifest OUTDIR/cases.json
#   --compact  (default) the small set kept in the repository; --full: the reference set's cases
#   --th       the Torch7 launcher (lua/build_torch7.sh writes PREFIX/bin/th); default $TH, then `th`
#   --only     these cases only (the manifest keeps the other entries it already lists)
#   --python   a Python with numpy and Pillow (default $PYTHON, then python3)
#   --inputs-from  take the decode cases' image files from the transforms case of this golden set
#
# Exit status 0 when every case was written; otherwise one line on stderr naming the failed step.
set -uo pipefail

die() { echo "generate.sh: $*" >&2; exit 1; }
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

[ $# -ge 2 ] || die "usage: generate.sh GUNN_DIR OUTDIR [--compact|--full] [--th TH] [--only CASE,...] [--python PY] [--inputs-from SET_DIR] [--keep-work]"
GUNN=$1; OUT=$2; shift 2
MODE=compact; TH_BIN=${TH:-}; ONLY=""; PY=${PYTHON:-python3}; INPUTS_FROM=""; KEEP=0
while [ $# -gt 0 ]; do
  case $1 in
    --compact) MODE=compact ;;
    --full) MODE=full ;;
    --th) TH_BIN=${2:-}; shift ;;
    --only) ONLY=${2:-}; shift ;;
    --python) PY=${2:-}; shift ;;
    --inputs-from) INPUTS_FROM=${2:-}; shift ;;
    --keep-work) KEEP=1 ;;
    *) die "unknown argument $1" ;;
  esac
  shift
done

[ -f "$GUNN/models/GunnLayer.lua" ] && [ -f "$GUNN/main.lua" ] || die "$GUNN is not a GUNN checkout (models/GunnLayer.lua, main.lua)"
GUNN=$(cd "$GUNN" && pwd)
mkdir -p "$OUT" || die "cannot create $OUT"
OUT=$(cd "$OUT" && pwd)
[ -n "$TH_BIN" ] || TH_BIN=$(command -v th || true)
[ -n "$TH_BIN" ] || die "no Torch7 launcher: pass --th (lua/build_torch7.sh PREFIX writes PREFIX/bin/th)"
"$TH_BIN" -e "require 'torch'; require 'nn'; require 'optim'; require 'image'; require 'threads'; require 'libjpeg'; require 'liblua_png'" >/dev/null 2>&1 \
  || die "$TH_BIN cannot load torch, nn, optim, image and threads"
"$PY" -c "import numpy, PIL" 2>/dev/null || die "$PY lacks numpy or Pillow (pass --python)"
[ -z "$INPUTS_FROM" ] || [ -f "$INPUTS_FROM/transforms.json" ] || die "--inputs-from: no transforms.json in $INPUTS_FROM"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gunn-golden.XXXXXX") || die "cannot make a work folder"
trap '[ $KEEP = 1 ] || rm -rf "$WORK"' EXIT
BUILD_INFO=$(dirname "$(readlink -f "$TH_BIN")")/../BUILD-INFO
COMMANDS="$WORK/commands.txt"; : > "$COMMANDS"

# OpenBLAS kernels and threads per case. The reference set was made on two machines: the GunnLayer and
# whole-network cases with the AVX-512 kernels OpenBLAS picks for Cooperlake and two BLAS threads, the
# rest with the AVX2 (Haswell) kernels and one thread; float sums depend on both. The compact set uses
# Haswell and one thread throughout (any AVX2 machine reproduces it).
has_avx512=0; grep -q avx512_bf16 /proc/cpuinfo 2>/dev/null && has_avx512=1
blas_env() {  # CORE THREADS -> env words
  local core=$1 threads=$2
  if [ "$core" = Cooperlake ] && [ $has_avx512 = 0 ]; then
    echo "generate.sh: warning: this CPU lacks AVX-512 BF16; using the Haswell kernels (float results will differ from the reference)" >&2
    core=Haswell
  fi
  echo "OPENBLAS_CORETYPE=$core OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=1"
}

# build facts as the transforms case records them, from the BUILD-INFO that build_torch7.sh writes
build_text() {
  local f=$BUILD_INFO
  [ -f "$f" ] || { echo "unknown build (no BUILD-INFO next to $TH_BIN)"; return; }
  c() { awk -v r="$1" '$1 == r {print substr($2, 1, 7)}' "$f"; }
  v() { awk -v k="$1" '$1 == k {$1 = ""; sub(/^ /, ""); print}' "$f"; }
  echo "torch7 $(c torch/torch7), paths $(c torch/paths), cwrap $(c torch/cwrap), sys $(c torch/sys)," \
       "xlua $(c torch/xlua), dok $(c torch/dok), image $(c torch/image) (torch/image), CPU," \
       "gcc $(v gcc | cut -d. -f1,2) $(v cflags), Debian LuaJIT $(v luajit)," \
       "libjpeg62-turbo $(v libjpeg62-turbo), libpng $(v libpng16-16)"
}

# run_case NAME KIND CORE THREADS DRIVER ARGS...: one driver; its last stdout line lists the files
run_case() {
  local name=$1 kind=$2 core=$3 threads=$4 driver=$5; shift 5
  if [ -n "$ONLY" ] && [[ ",$ONLY," != *",$name,"* ]]; then return 0; fi
  local env; env=$(blas_env "$core" "$threads")
  local log="$WORK/$name.log"
  echo "== $name ($kind)"
  echo "$env $TH_BIN lua/drivers/$driver --name $name --out OUTDIR $(printf '%q ' "$@")" >> "$COMMANDS"
  local t0=$SECONDS
  (cd "$WORK" && env $env "$TH_BIN" "$HERE/drivers/$driver" --name "$name" --out "$OUT" "$@") > "$log" 2>&1 \
    || { KEEP=1; die "case $name failed: $(tail -n 1 "$log" | cut -c1-300) (log: $log)"; }
  local files; files=$(tail -n 1 "$log")
  echo "$name	$kind	$files	$env" >> "$WORK/written.tsv"
  echo "   $(( SECONDS - t0 )) s: $files"
}

prepare_images() {
  local from=()
  [ -z "$INPUTS_FROM" ] || from=(--from-set "$INPUTS_FROM")
  echo "python lua/tools/make_images.py $WORK/images ${from[*]}" >> "$COMMANDS"
  "$PY" "$HERE/tools/make_images.py" "$WORK/images" "${from[@]}" > /dev/null || die "make_images.py failed"
}
prepare_cifar() {  # DIR TRAIN VAL
  echo "python lua/tools/make_cifar_data.py $1 --dataset cifar10 --train $2 --val $3 --seed 2024" >> "$COMMANDS"
  "$PY" "$HERE/tools/make_cifar_data.py" "$1" --dataset cifar10 --train "$2" --val "$3" --seed 2024 > /dev/null \
    || die "make_cifar_data.py failed"
}
wants() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

G=(--gunn "$GUNN")
START=$SECONDS
if [ $MODE = full ]; then
  run_case gunnlayer_cifar gunnlayer Cooperlake 2 gunnlayer.lua "${G[@]}" --dataset cifar10
  run_case gunnlayer_imagenet gunnlayer Cooperlake 2 gunnlayer.lua "${G[@]}" --dataset imagenet
  run_case gunn15_cifar10 gunn_train Cooperlake 2 gunn_train.lua "${G[@]}" --net gunn-15 --dataset cifar10
  run_case gunn18_imagenet gunn_logits Cooperlake 2 gunn_logits.lua "${G[@]}" --net gunn-18 --dataset imagenet
  run_case extras extras Haswell 1 extras.lua "${G[@]}"
  if wants transforms; then prepare_images; fi
  run_case transforms transforms Haswell 1 transforms.lua "${G[@]}" --cases "$HERE/cases/transforms_full.lua" \
    --files "$WORK/images" --set shared --build "$(build_text)"
  run_case lua_rng lua_rng Haswell 1 lua_rng.lua
  run_case lua_init lua_init Haswell 1 lua_init.lua "${G[@]}" --seed 7
  if wants lua_run_cifar10; then prepare_cifar "$WORK/cifar" 76 20; fi
  run_case lua_run_cifar10 lua_run Haswell 1 lua_run.lua "${G[@]}" --data "$WORK/cifar" --work "$WORK/run" \
    --net gunn-15 --dataset cifar10 --batch 8 --epochs 2 --seed 5 --LR 0.1 --precision double --threads 1
else
  run_case gunnlayer_cifar gunnlayer Haswell 1 gunnlayer.lua "${G[@]}" --dataset cifar10
  run_case gunnlayer_imagenet gunnlayer Haswell 1 gunnlayer.lua "${G[@]}" --dataset imagenet
  run_case gunn_mini_cifar10 gunn_train Haswell 1 gunn_train.lua "${G[@]}" --net gunn-mini --dataset cifar10
  run_case gunn18_imagenet gunn_logits Haswell 1 gunn_logits.lua "${G[@]}" --net gunn-18 --dataset imagenet
  run_case extras extras Haswell 1 extras.lua "${G[@]}"
  if wants transforms; then prepare_images; fi
  run_case transforms transforms Haswell 1 transforms.lua "${G[@]}" --cases "$HERE/cases/transforms_compact.lua" \
    --files "$WORK/images" --set compact --build "$(build_text)"
  run_case lua_rng lua_rng Haswell 1 lua_rng.lua --seeds 0,2147483653 --raw 700 --count 200
  run_case lua_init lua_init Haswell 1 lua_init.lua "${G[@]}" --seed 7 --cifar_net gunn-mini
  if wants lua_run_mini_cifar10; then prepare_cifar "$WORK/cifar" 20 8; fi
  run_case lua_run_mini_cifar10 lua_run Haswell 1 lua_run.lua "${G[@]}" --data "$WORK/cifar" --work "$WORK/run" \
    --net gunn-mini --dataset cifar10 --batch 8 --epochs 2 --seed 5 --LR 0.1 --precision double --threads 1 \
    --store_train 1
fi
[ -f "$WORK/written.tsv" ] || die "no case selected (--only $ONLY)"

GUNN_COMMIT=$(git -C "$GUNN" rev-parse HEAD 2>/dev/null || echo "unknown (not a git checkout)")
"$PY" "$HERE/tools/manifest.py" "$OUT" "$WORK/written.tsv" "$COMMANDS" --mode "$MODE" --gunn-commit "$GUNN_COMMIT" \
  --build-info "$BUILD_INFO" --seconds $(( SECONDS - START )) \
  --subst "$OUT=OUTDIR" "$WORK=WORK" "$GUNN=GUNN_DIR" "$HERE=lua" "$TH_BIN=th" || die "writing $OUT/cases.json failed"
echo "== $OUT: $(wc -l < "$WORK/written.tsv") cases in $(( SECONDS - START )) s"
