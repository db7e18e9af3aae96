#!/bin/sh
# Fuzz the native runner's TensorProto reader with libFuzzer under ASan and UBSan.
#
#   bench/fuzz_tensorproto.sh [SECONDS] [WORKDIR]
#
# SECONDS defaults to 60; WORKDIR to ${EDGEPACK_CACHE_DIR:-~/.cache/edgepack}/fuzz. The corpus
# persists there between runs. Needs clang with libFuzzer (Debian: clang, libclang-rt-14-dev),
# cmake and Python with the onnx package (for the seed corpus). Prints one summary line at the
# end; exits 1 when libFuzzer found a crash (the reproducer is in WORKDIR/artifacts/).
set -eu

seconds=${1:-60}
here=$(cd "$(dirname "$0")/.." && pwd)
work=${2:-${EDGEPACK_CACHE_DIR:-$HOME/.cache/edgepack}/fuzz}
src="$here/device_scripts/runner"
mkdir -p "$work/corpus" "$work/artifacts"

cc=${CC:-clang}
cmake -S "$src" -B "$work/build" -DEDGEPACK_BUILD_FUZZER=ON -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_BUILD_TYPE=Debug >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log"; exit 2; }
cmake --build "$work/build" >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 2; }

python3 "$here/bench/fuzz_seeds.py" "$work/seeds" "$work/tensorproto.dict"

log="$work/fuzz-$(date +%Y%m%d-%H%M%S).log"
echo "fuzzing for ${seconds}s; log: $log" >&2
status=0
ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1} \
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
"$work/build/fuzz_tensorproto" "$work/corpus" "$work/seeds" \
    -dict="$work/tensorproto.dict" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
    >"$log" 2>&1 || status=$?

runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n 1)
cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
corpus=$(find "$work/corpus" -type f | wc -l)
if [ "$status" -eq 0 ]; then
    echo "fuzz_tensorproto: no findings; ${runs:-?} executions in ${took:-?} s;" \
        "coverage ${cov:-?} edges; corpus ${corpus} inputs (ASan+UBSan)"
else
    echo "fuzz_tensorproto: FINDING (libFuzzer exit $status) after ${runs:-?} executions;" \
        "see $log and $work/artifacts/" >&2
    tail -n 40 "$log" >&2
    exit 1
fi
