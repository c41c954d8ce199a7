#!/usr/bin/env bash
# Runs every benchmark in bench/ and prints its figures; docs/BENCHMARKS.md records them.
set -euo pipefail
BUILD=${1:-build}

echo "== train_throughput: wall clock, paired rounds =="
"$BUILD/bench/train_throughput"

# Instruction counts are repeatable whatever else the machine runs; they show the loop's own
# overhead without the noise of a shared machine.
if command -v valgrind >/dev/null && command -v callgrind_annotate >/dev/null; then
  echo "== train_throughput: instructions per round (callgrind, 512 images, 1 thread) =="
  tmp=$(mktemp -d)
  for side in bare bulwark; do
    OMP_NUM_THREADS=1 valgrind --tool=callgrind --callgrind-out-file="$tmp/$side" \
      "$BUILD/bench/train_throughput" 512 1 128 "$side" >/dev/null 2>&1
    callgrind_annotate --inclusive=yes "$tmp/$side" | grep -m1 "${side}_round" | awk -v s="$side" '{print "  " s " round: " $1 " instructions"}'
  done
  rm -rf "$tmp"
fi
