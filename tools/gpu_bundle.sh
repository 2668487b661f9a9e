#!/usr/bin/env bash
# Prepares .gpu_bundle/ (ignored by git) with what tools/gpu_check.sh needs on a GPU host that has no network and
# no torchfile: torchfile.py (one file, a requirement of the project that the GPU host lacks). The golden data
# of its checks is golden/compact, in the checkout. Run it here, then carry .gpu_bundle to the GPU machine with
# the checkout.
#   tools/gpu_bundle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
rm -rf .gpu_bundle
mkdir -p .gpu_bundle/python
cp "$("$PYTHON" -c 'import torchfile; print(torchfile.__file__)')" .gpu_bundle/python/
du -sh .gpu_bundle
