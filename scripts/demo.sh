#!/usr/bin/env bash
# The reference experiment, as far as it exists today: train the baseline `cnn` on
# Fashion-MNIST, evaluate it, attack it and watch its accuracy collapse, then calibrate the
# detectors that watch for such attacks.
# Later steps (harden, serve, the closed loop) extend it.
set -euo pipefail
BULWARK=${1:-build/bulwark}
OUT=${2:-build/demo}
mkdir -p "$OUT"
"$BULWARK" --version
echo
echo "== 1. train the baseline cnn on Fashion-MNIST =="
"$BULWARK" --seed 0 train --model cnn --data fashion-mnist --epochs 5 --batch 128 --out "$OUT/baseline.pt"
echo
echo "== 2. evaluate it on the 10,000 test images =="
"$BULWARK" eval --model "$OUT/baseline.pt"
echo
echo "== 3. what the saved model carries =="
"$BULWARK" info "$OUT/baseline.pt"
echo
echo "== 4. attack it: FGSM and PGD-20 at two budgets, then the AutoAttack-style cascade =="
"$BULWARK" attack --model "$OUT/baseline.pt" --attacks fgsm,pgd --eps 0.05,0.1 --n 1000 --quiet
echo
"$BULWARK" attack --model "$OUT/baseline.pt" --attacks auto --eps 0.1 --n 1000 --quiet
echo
echo "== 5. watch: calibrate the attack detectors on held-out data, then test them (and an adaptive attacker) =="
"$BULWARK" detect calibrate --model "$OUT/baseline.pt" --out "$OUT/baseline.detect"
echo
"$BULWARK" detect evaluate --model "$OUT/baseline.pt" --calibration "$OUT/baseline.detect" --attacks fgsm,pgd --n 300 \
  --adaptive-steps 50 --quiet
