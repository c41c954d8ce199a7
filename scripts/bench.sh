#!/usr/bin/env bash
# Runs every benchmark in bench/ one after another (never two at once: they share 2 cores) and
# prints its figures; docs/BENCHMARKS.md records them with this command.
set -euo pipefail
BUILD=${1:-build}
MODEL=${2:-$BUILD/demo/baseline.pt}
[ -f "$MODEL" ] || MODEL=-   # no demo model yet: attack_throughput trains one for an epoch

echo "== decode: image-folder PNG decode rate, 32x32 and 224x224 =="
"$BUILD/bench/decode"

echo "== train_throughput: wall clock, paired rounds =="
"$BUILD/bench/train_throughput"

echo "== max_pool: bulwark::max_pool2d vs ATen, alternated pairs =="
"$BUILD/bench/max_pool" 11

echo "== conv_pool: the fused first layer vs the operators it replaces, rotated rounds =="
"$BUILD/bench/conv_pool" 21

echo "== attack_throughput: wall clock, paired rounds =="
"$BUILD/bench/attack_throughput" "$MODEL" 1000 9   # ends with fp32 vs bf16 on the undefended model
if [ -f "$BUILD/demo/fastat.pt" ]; then
  echo "== attack_throughput: fp32 vs bf16 gradient passes on the demo's hardened model =="
  "$BUILD/bench/attack_throughput" "$BUILD/demo/fastat.pt" 1000 0 256 3
fi

if [ -f "$BUILD/demo/fastat.pt" ]; then
  # The AutoAttack reference row needs AUTOATTACK_DIR: a checkout of github.com/fra31/auto-attack.
  echo "== auto_attack: auto on 200 images beside Bulwark before issue 14 and the AutoAttack reference =="
  "$BUILD/bench/auto_attack" "$BUILD/demo/fastat.pt" 200 1 2 1
  echo "== square_queries: Square's L-inf queries on the window engine vs the frozen copy, with profiles =="
  "$BUILD/bench/square_queries" "$BUILD/demo/fastat.pt" 200 1000 1 2 300
fi

echo "== harden: one epoch per method on the full training set, ratios to standard =="
"$BUILD/bench/harden"
echo "== harden: standard vs Fast-AT, 3 alternating pairs =="
"$BUILD/bench/harden" 60000 128 3
echo "== harden: PGD-7-AT before issue 14, NCHW, channels-last fp32 and bf16 inner passes, one epoch each, both orders =="
"$BUILD/bench/harden" precision 60000 128 1
"$BUILD/bench/harden" precision 60000 128 1 bf16

echo "== serve: REST/gRPC latency and throughput, batching efficiency, guard cost, detector cost =="
CALIBRATION=$BUILD/demo/baseline.detect
if [ "$MODEL" != - ] && [ -f "$CALIBRATION" ]; then
  "$BUILD/bench/serve" "$MODEL" 3 "$CALIBRATION"
  echo "== detect: the stream monitor end to end, then Square against the query-similarity detector =="
  "$BUILD/bench/detect" monitor "$MODEL" "$CALIBRATION" 50
  "$BUILD/bench/detect" stateful "$MODEL" 50 5000
  echo "== stateful_evasion: Square with and without noise padding, benign replay, camera frames (issue 31) =="
  # distance grid: 0 = the fingerprints alone; the default 0.025 14; a stricter and a looser one
  for cfg in "0 14" "0.025 14" "0.02 14" "0.03 14" "0.015 7"; do
    # shellcheck disable=SC2086
    "$BUILD/bench/stateful_evasion" "$MODEL" 20 300 $cfg
  done
  "$BUILD/bench/stateful_evasion" "$MODEL" 20 5000 0.025 14  # Square's default budget
else
  "$BUILD/bench/serve" "$MODEL" 3
fi

# PGD-20 on a torchvision resnet18 beside torchattacks and ART (their rows need TORCHATTACKS_DIR and
# ART_DIR, checkouts of the two libraries; the first run trains the model, ~7 minutes).
echo "== pgd_peers: PGD-20 on resnet18 3x32x32, eps 8/255 =="
"$(dirname "$0")/../bench/pgd_peers.sh" "$BUILD" "$BUILD/bench-data/pgd_peers" 1000

# Instruction counts are repeatable whatever else the machine runs; they show each loop's own
# overhead without the noise of a shared machine.
if command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null; then
  tmp=$(mktemp -d)
  echo "== train_throughput: instructions per round (callgrind, 512 images, 1 thread) =="
  for side in bare bulwark; do
    OMP_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$tmp/$side" \
      "$BUILD/bench/train_throughput" 512 1 128 "$side" >/dev/null 2>&1
    callgrind_annotate --inclusive=yes "$tmp/$side" | grep -m1 "${side}_round" | awk -v s="$side" '{print "  " s " round: " $1 " instructions"}'
  done
  rm -rf "$tmp"
fi

# Last: the soak is pass/fail (exit 1 fails `make bench`) and takes SOAK_SECONDS (default 600;
# 0 skips it). It runs a copy of the binary, so a rebuild meanwhile does not pull it away.
SOAK_SECONDS=${SOAK_SECONDS:-600}
if [ "$SOAK_SECONDS" != 0 ]; then
  echo "== soak: $SOAK_SECONDS s of hostile load on a real bulwark serve (REST + gRPC), then SIGTERM =="
  soak_dir=$(mktemp -d)
  cp "$BUILD/bulwark" "$soak_dir/bulwark"
  status=0
  "$BUILD/bench/soak" "$soak_dir/bulwark" "$MODEL" "$SOAK_SECONDS" || status=$?
  rm -rf "$soak_dir"
  [ "$status" = 0 ] || exit "$status"
fi
