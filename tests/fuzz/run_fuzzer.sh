#!/usr/bin/env bash
# Runs one libFuzzer target for ctest (label fuzz).
#
#   run_fuzzer.sh replay BINARY DIR...
#       runs every file under the DIRs (regression inputs, the committed
#       corpus) once; a missing DIR is empty
#   run_fuzzer.sh fuzz BINARY CORPUS WORK SECONDS [MAX_LEN]
#       fuzzes for SECONDS, starting from the committed CORPUS (read only:
#       new inputs go to WORK/corpus, artifacts to WORK/artifacts)
#
# Any crash, timeout (10 s per input), leak, sanitizer report or broken
# invariant of a target ends the run with a non-zero status; the offending
# input is printed in hex and kept under WORK/artifacts.
set -uo pipefail

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:handle_abort=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

mode=${1:-} bin=${2:-}
shift 2 || { echo "usage: $0 replay|fuzz BINARY ..." >&2; exit 2; }
[[ -x $bin ]] || { echo "run_fuzzer: $bin is not built" >&2; exit 2; }
name=$(basename "$bin")

# libFuzzer's options shared by both modes: per-input time limit, memory
# limits (no input may make a single allocation of 256 MiB: that would be a
# guest-sized one), no leaks.
common=(-timeout=10 -rss_limit_mb=2560 -malloc_limit_mb=256 -detect_leaks=1)

show_artifacts() { # $1 = folder
  local f
  for f in "$1"/*; do
    [[ -f $f ]] || continue
    echo "run_fuzzer: $name: failing input $f ($(stat -c %s "$f") bytes):"
    od -An -tx1 -v "$f" | head -n 64
  done
}

case $mode in
  replay)
    files=()
    for dir in "$@"; do
      [[ -d $dir ]] || continue
      while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$dir" -type f ! -name '*.md' -print0 | sort -z)
    done
    if ((${#files[@]} == 0)); then
      echo "run_fuzzer: $name: nothing to replay"
      exit 0
    fi
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # Inputs in batches, so that the command line stays short.
    status=0
    for ((i = 0; i < ${#files[@]}; i += 200)); do
      "$bin" "${common[@]}" -artifact_prefix="$work/" "${files[@]:i:200}" >"$work/log" 2>&1 || status=$?
      if ((status != 0)); then
        tail -n 80 "$work/log"
        show_artifacts "$work"
        echo "run_fuzzer: $name: replay FAILED (status $status)"
        exit 1
      fi
    done
    echo "run_fuzzer: $name: replayed ${#files[@]} inputs, all passed"
    ;;
  fuzz)
    corpus=$1 work=$2 seconds=$3 max_len=${4:-4096}
    rm -rf "$work"
    mkdir -p "$work/corpus" "$work/artifacts"
    [[ -d $corpus ]] || mkdir -p "$corpus"
    "$bin" "${common[@]}" -max_total_time="$seconds" -max_len="$max_len" -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/" "$work/corpus" "$corpus" >"$work/log" 2>&1
    status=$?
    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::' "$work/log" | sed "s/^/run_fuzzer: $name: /"
    if ((status != 0)) || compgen -G "$work/artifacts/*" >/dev/null; then
      tail -n 80 "$work/log"
      show_artifacts "$work/artifacts"
      echo "run_fuzzer: $name: FAILED (status $status); log: $work/log"
      exit 1
    fi
    echo "run_fuzzer: $name: ${seconds} s without a finding"
    ;;
  *)
    echo "usage: $0 replay|fuzz BINARY ..." >&2
    exit 2
    ;;
esac
