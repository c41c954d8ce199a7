#!/usr/bin/env bash
# The reference experiment, as far as it exists today: train the baseline `cnn` on
# Fashion-MNIST, evaluate it, show its metadata. Later steps (attack, harden, serve) extend it.
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
