#!/usr/bin/env bash
# The reference experiment, as far as it exists today: train the baseline `cnn` on
# Fashion-MNIST, evaluate it, attack it and watch its accuracy collapse, then calibrate the
# detectors that watch for such attacks, and put the model in the signed registry (every run
# recorded there, every step in its audit log). Later steps (the closed loop) extend it.
set -euo pipefail
BULWARK=${1:-build/bulwark}
OUT=${2:-build/demo}
mkdir -p "$OUT"
REG="$OUT/registry"
"$BULWARK" --version
echo
echo "== 0. a model registry and a signing key (kept from earlier runs) =="
[ -f "$REG/registry.db" ] || "$BULWARK" registry init --registry "$REG"
[ -f "$OUT/signing.key" ] || "$BULWARK" keys gen --out "$OUT/signing"
"$BULWARK" keys trust "$OUT/signing.pub" --registry "$REG"
# The log's public key, kept outside the registry: servers pin it (--log-key), so a registry whose
# log was re-keyed is refused. Copied once, when the registry is new (trust on first use).
[ -f "$OUT/audit-log.pub" ] || cp "$REG/log.pub" "$OUT/audit-log.pub"
echo
echo "== 1. train the baseline cnn on Fashion-MNIST =="
"$BULWARK" --seed 0 train --model cnn --data fashion-mnist --epochs 5 --batch 128 --out "$OUT/baseline.pt" \
  --registry "$REG"
echo
echo "== 2. evaluate it on the 10,000 test images =="
"$BULWARK" eval --model "$OUT/baseline.pt"
echo
echo "== 3. what the saved model carries =="
"$BULWARK" info "$OUT/baseline.pt"
echo
echo "== 4. attack it: FGSM and PGD-20 at two budgets, then the AutoAttack-style cascade =="
"$BULWARK" attack --model "$OUT/baseline.pt" --attacks fgsm,pgd --eps 0.05,0.1 --n 1000 --quiet --registry "$REG"
echo
"$BULWARK" attack --model "$OUT/baseline.pt" --attacks auto --eps 0.1 --n 500 --quiet
echo
echo "== 5. watch: calibrate the attack detectors on held-out data, then test them (and an adaptive attacker) =="
"$BULWARK" detect calibrate --model "$OUT/baseline.pt" --out "$OUT/baseline.detect"
echo
"$BULWARK" detect evaluate --model "$OUT/baseline.pt" --calibration "$OUT/baseline.detect" --attacks fgsm,pgd --n 300 \
  --adaptive-steps 50 --quiet --registry "$REG"
echo
echo "== 6. register the model with its calibration (signed, OMS format), promote it, check the trail =="
"$BULWARK" registry register fashion "$OUT/baseline.pt" --calibration "$OUT/baseline.detect" --key "$OUT/signing.key" \
  --method train --dataset fashion-mnist --train-seed 0 --registry "$REG"
"$BULWARK" registry promote fashion@latest --key "$OUT/signing.key" --registry "$REG"
"$BULWARK" registry list --registry "$REG"
"$BULWARK" runs list --limit 5 --registry "$REG"
"$BULWARK" audit verify --registry "$REG"
echo
echo "== 7. the closed loop: serve under bulwark guard, attack with FGSM, alarm, harden, gate, promote, recover =="
"$(dirname "$0")/loop.sh" "$BULWARK" "$OUT"
