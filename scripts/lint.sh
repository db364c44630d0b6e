#!/usr/bin/env bash
# Style checks that need no judgement, run first by scripts/test.sh:
#  1. clang-format (the repo's .clang-format) on every tracked C++ source and
#     header under src/, tests/ and bench/: a file that would change fails.
#     `clang-format -i FILE` fixes it.
#  2. clang-tidy with the checks of .clang-tidy on every source under src/,
#     using the compile_commands.json of BUILD_DIR (default build/, configured
#     here if it is missing).
# Usage: scripts/lint.sh [format|tidy]   (both without an argument)
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${BUILD_DIR:-build}
what=${1:-all}

check_format() {
  local drifting=()
  while IFS= read -r f; do
    clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || drifting+=("$f")
  done < <(git ls-files -- 'src/*.cc' 'src/*.h' 'tests/*.cc' 'tests/*.h' 'bench/*.cc' 'bench/*.h')
  if ((${#drifting[@]})); then
    echo "lint: not formatted with clang-format (run clang-format -i on them):" >&2
    printf '  %s\n' "${drifting[@]}" >&2
    return 1
  fi
  echo "lint: formatting ok"
}

check_tidy() {
  if [[ ! -f "$build_dir/compile_commands.json" ]]; then
    cmake -S . -B "$build_dir" -G Ninja >/dev/null
  fi
  # One clang-tidy per core; each exits non-zero when a check fires
  # (.clang-tidy makes every warning an error), and xargs then does too.
  # GCC-only flags of the compile database (e.g. -Wno-restrict) are not
  # clang's business.
  git ls-files -z -- 'src/*.cc' |
    xargs -0 -P "$(nproc)" -n 1 clang-tidy -p "$build_dir" --quiet --use-color=false \
      --extra-arg=-Wno-unknown-warning-option \
      >"$build_dir/clang-tidy.log" 2>&1 || {
    grep -E '(warning|error):' "$build_dir/clang-tidy.log" >&2 || tail -n 20 "$build_dir/clang-tidy.log" >&2
    echo "lint: clang-tidy found problems (full output: $build_dir/clang-tidy.log)" >&2
    return 1
  }
  echo "lint: clang-tidy ok"
}

case $what in
  format) check_format ;;
  tidy) check_tidy ;;
  all) check_format && check_tidy ;;
  *) echo "usage: $0 [format|tidy]" >&2; exit 2 ;;
esac
