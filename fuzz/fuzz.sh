#!/bin/sh
# fuzz/fuzz.sh — builds and runs the libFuzzer targets (fuzz/README.md).
#   fuzz.sh build DIR [JOBS]             configure DIR with clang (BULWARK_FUZZ=ON) and build every target
#   fuzz.sh run DIR SECONDS [TARGET...]  run each target (default: all) for SECONDS, one after another
#                                        (or until FUZZ_RUNS executions, when that is set and comes first)
#   fuzz.sh smoke DIR TARGET RUNS        the seeds then RUNS mutations with a fixed seed (ctest)
# New inputs go to DIR/corpus/TARGET, crashes to DIR/artifacts/TARGET/; fuzz/corpus/ is only read.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
targets="rest_codec grpc_request idx tokens_yaml serve_config model_spec
         registry_reference registry_bundle registry_statement registry_checkpoint"

# ccache across the precompiled header and across build directories of this checkout.
export CCACHE_SLOPPINESS="${CCACHE_SLOPPINESS:-pch_defines,time_macros,include_file_mtime,include_file_ctime}"
export CCACHE_BASEDIR="${CCACHE_BASEDIR:-$src}"

# Leaks, UB and broken invariants are crashes; the suppression files are empty (README.md).
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:suppressions=$here/ubsan.supp}"
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$here/lsan.supp}"

usage() { sed -n '2,6p' "$0" >&2; exit 2; }

fuzzer_args() {  # target -> the options every run of it takes
  t=$1
  set -- -artifact_prefix="$dir/artifacts/$t/" -print_final_stats=1 -rss_limit_mb=2048 -timeout=25
  [ -f "$here/dict/$t.dict" ] && set -- "$@" -dict="$here/dict/$t.dict"
  echo "$@"
}

binary() {
  b="$dir/fuzz/fuzz_$1"
  [ -x "$b" ] || { echo "fuzz.sh: $b is missing: run 'fuzz.sh build $dir' first" >&2; exit 1; }
  echo "$b"
}

cmd=${1:-}; [ $# -ge 2 ] || usage
dir=$(mkdir -p "$2" && cd "$2" && pwd)
case $cmd in
  build)
    jobs=${3:-2}
    cxx=${CXX:-clang++}
    case $($cxx --version 2>/dev/null | head -1) in *clang*) ;; *) cxx=clang++ ;; esac
    # -O1 with asserts on: fast to compile, still fast to run.
    cmake -S "$src" -B "$dir" -DBULWARK_FUZZ=ON -DBULWARK_TESTS=OFF -DBULWARK_BENCH=OFF \
      -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_BUILD_TYPE=Fuzz -DCMAKE_CXX_FLAGS_FUZZ=-O1 >/dev/null
    cmake --build "$dir" --target fuzzers -j"$jobs"
    ;;
  run)
    [ $# -ge 3 ] || usage
    seconds=$3; shift 3
    [ $# -gt 0 ] || set -- $targets
    printf '%-22s %12s %10s %8s %8s\n' target executions exec/s corpus rss_mb > "$dir/summary.txt"
    for t in "$@"; do
      b=$(binary "$t")
      mkdir -p "$dir/corpus/$t" "$dir/artifacts/$t"
      echo "== fuzz_$t: $seconds s" >&2
      # shellcheck disable=SC2046
      "$b" $(fuzzer_args "$t") -max_total_time="$seconds" ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} "$dir/corpus/$t" "$here/corpus/$t" 2>"$dir/$t.log" || {
        tail -n 60 "$dir/$t.log" >&2
        echo "fuzz.sh: fuzz_$t failed; the input is in $dir/artifacts/$t/ (log: $dir/$t.log)" >&2
        exit 1
      }
      figure() { awk -v k="stat::$1:" '$1 == k {print $2}' "$dir/$t.log"; }
      printf '%-22s %12s %10s %8s %8s\n' "$t" "$(figure number_of_executed_units)" "$(figure average_exec_per_sec)" \
        "$(ls "$dir/corpus/$t" | wc -l)" "$(figure peak_rss_mb)" >> "$dir/summary.txt"
    done
    cat "$dir/summary.txt"
    ;;
  smoke)
    [ $# -eq 4 ] || usage
    t=$3; runs=$4
    b=$(binary "$t")
    rm -rf "$dir/smoke/$t"
    mkdir -p "$dir/smoke/$t" "$dir/artifacts/$t"
    # shellcheck disable=SC2046
    exec "$b" $(fuzzer_args "$t") -seed=1 -runs="$runs" -max_total_time=120 "$dir/smoke/$t" "$here/corpus/$t"
    ;;
  *) usage ;;
esac
