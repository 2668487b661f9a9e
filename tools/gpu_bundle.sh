#!/usr/bin/env bash
# Prepares .gpu_bundle/ (ignored by git) with what tools/gpu_check.sh needs on a GPU host that has no network,
# no ../shared and no torchfile: the large gunn-15 golden files and torchfile.py (one file, a requirement of the
# project that the GPU host lacks). Run it here, then carry .gpu_bundle to the GPU machine with the checkout.
#   tools/gpu_bundle.sh [PARITY_DIR]     (default ../shared/parity)
set -euo pipefail
cd "$(dirname "$0")/.."
PARITY=${1:-../shared/parity}
PYTHON=${PYTHON:-python3}
rm -rf .gpu_bundle
mkdir -p .gpu_bundle/parity .gpu_bundle/python
for f in gunn15_cifar10.json gunn15_cifar10.bin; do
    cp "$PARITY/$f" .gpu_bundle/parity/
done
cp "$("$PYTHON" -c 'import torchfile; print(torchfile.__file__)')" .gpu_bundle/python/
du -sh .gpu_bundle
