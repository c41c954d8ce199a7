#!/usr/bin/env bash
# bench/loop — the closed loop measured end to end: time to alarm, time to promotion, accuracy
# under attack and recovered, for FGSM and for PGD traffic triggering it. Needs the demo's
# baseline, calibration, registry and key (make demo). Usage: bench/loop.sh [BULWARK] [OUT_DIR]
set -euo pipefail
BULWARK=${1:-build/bulwark}
OUT=${2:-build/demo}
for attack in fgsm pgd; do
  echo "== loop triggered by $attack traffic =="
  scripts/loop.sh "$BULWARK" "$OUT" "$attack" | tail -16
done
