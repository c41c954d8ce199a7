#!/usr/bin/env bash
# The RGB hardening figure (issue 30, docs/BENCHMARKS.md): a CIFAR-format RGB set made from Debian's
# Fashion-MNIST (bench/make_rgb_fashion.py), the zoo cnn trained on it, attacked, hardened with
# Fast-AT, attacked again (PGD-20 and auto), then detectors calibrated at 5 % FPR and evaluated.
# usage: bench/rgb_harden.sh BUILD OUT [EPS=0.0313725] [TRAIN_EPOCHS=3] [HARDEN_EPOCHS=3]
set -euo pipefail
BUILD=${1:?build dir}; OUT=${2:?output dir}; EPS=${3:-0.0313725}; TE=${4:-3}; HE=${5:-3}
B="$BUILD/bulwark"
mkdir -p "$OUT"
[ -f "$OUT/rgb/test_batch.bin" ] || /usr/bin/python3 "$(dirname "$0")/make_rgb_fashion.py" "$OUT/rgb"
t() { local s=$SECONDS; "$@"; echo "  ($((SECONDS - s)) s)"; }
echo "== train cnn on 3x32x32 ($TE epochs, crop+flip) =="
t "$B" train --model cnn --data "$OUT/rgb" --epochs "$TE" --quiet --out "$OUT/base.pt"
echo "== undefended: PGD-20 at eps $EPS, 1000 test images =="
t "$B" attack --model "$OUT/base.pt" --data "$OUT/rgb" --attacks fgsm,pgd --eps "$EPS" --n 1000 --quiet
echo "== harden: Fast-AT, $HE epochs =="
t "$B" harden --model "$OUT/base.pt" --data "$OUT/rgb" --method fast-at --eps "$EPS" --epochs "$HE" --quiet --out "$OUT/hard.pt"
echo "== hardened: PGD-20 and auto at eps $EPS, 1000 test images =="
t "$B" attack --model "$OUT/hard.pt" --data "$OUT/rgb" --attacks fgsm,pgd --eps "$EPS" --n 1000 --quiet
t "$B" attack --model "$OUT/hard.pt" --data "$OUT/rgb" --attacks auto --eps "$EPS",0.1,0.3 --n 1000 --quiet
echo "== detectors on the hardened model: calibrated at 5 % FPR, FGSM and PGD =="
t "$B" detect calibrate --model "$OUT/hard.pt" --data "$OUT/rgb" --fpr 0.05 --out "$OUT/hard.detect"
t "$B" detect evaluate --model "$OUT/hard.pt" --calibration "$OUT/hard.detect" --data "$OUT/rgb" --attacks fgsm,pgd --eps "$EPS" --n 1000 --quiet
