#!/usr/bin/env bash
# PGD-20 on a torchvision resnet18 (3x32x32, eps 8/255): Bulwark beside torchattacks and ART in one
# run, on the same model and test images (issue 30; docs/BENCHMARKS.md). The model: resnet18 trained in
# PyTorch with Fast-AT on the RGB set of bench/make_rgb_fashion.py (bench/make_resnet18.py), imported
# with `bulwark import`. TORCHATTACKS_DIR and ART_DIR: checkouts of the two libraries (see
# bench/pgd_peers.py); without them only Bulwark's rows run.
# usage: bench/pgd_peers.sh BUILD OUT [N=1000] [EPOCHS=1] [TRAIN_N=20000]
set -euo pipefail
BUILD=${1:?build dir}; OUT=${2:?output dir}; N=${3:-1000}; EPOCHS=${4:-1}; TRAIN_N=${5:-20000}
HERE=$(dirname "$0")
mkdir -p "$OUT"
[ -f "$OUT/rgb/test_batch.bin" ] || /usr/bin/python3 "$HERE/make_rgb_fashion.py" "$OUT/rgb"
if [ ! -f "$OUT/resnet18.pt" ]; then
  /usr/bin/python3 "$HERE/make_resnet18.py" "$OUT/rgb" "$OUT/resnet18.torchscript.pt" "$EPOCHS" "$TRAIN_N" 8/255 2
  "$BUILD/bulwark" import "$OUT/resnet18.torchscript.pt" --input-shape 3,32,32 --data "$OUT/rgb" --out "$OUT/resnet18.pt"
fi
echo "== PGD-20, eps 8/255, $N test images, 2 threads: Bulwark =="
OMP_NUM_THREADS=2 "$BUILD/bench/pgd_peers" "$OUT/resnet18.pt" "$OUT/rgb" "$N" 0.0313725490196 256
if [ -n "${TORCHATTACKS_DIR:-}" ] && [ -n "${ART_DIR:-}" ]; then
  echo "== the same: torchattacks, ART =="
  OMP_NUM_THREADS=2 /usr/bin/python3 "$HERE/pgd_peers.py" "$TORCHATTACKS_DIR" "$ART_DIR" "$OUT/resnet18.torchscript.pt" "$OUT/rgb" "$N" 8/255 256 2
  echo "== Bulwark again (the machine is shared: the ratio uses the two runs around the peers) =="
  OMP_NUM_THREADS=2 "$BUILD/bench/pgd_peers" "$OUT/resnet18.pt" "$OUT/rgb" "$N" 0.0313725490196 256
fi
