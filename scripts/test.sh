#!/usr/bin/env bash
# The whole test suite, what CI runs (.ci/run, with CI=true):
#  1. scripts/install-deps.sh: packages, the 6.1 and 6.12 guest kernels and
#     the Rust virtiofsd 1.13 (into .cache/).
#  1b. scripts/lint.sh: clang-format on src/, tests/ and bench/, and
#     clang-tidy (.clang-tidy) on src/; a finding fails the run.
#  2. build-asan (ASan + UBSan): the unit and cross-layer tests (label unit)
#     and the e2e guest test against the sanitized daemon (label sanitized:
#     a sanitizer report in the daemon fails it).
#  3. build-fuzz (clang, libFuzzer + ASan + UBSan, tests/fuzz): every fuzz
#     target replays its regression inputs and committed corpus, then fuzzes
#     for VFSD_FUZZ_SECONDS (default 60) s each (ctest label fuzz); a crash,
#     leak, sanitizer report or broken invariant fails.
#  3b. build-release: the daemon at -O3 (CMAKE_BUILD_TYPE=Release) must
#     build warning-free too; GCC's warnings there differ from -O2's.
#  4. build (the normal build): every test, with ctest: unit, integration,
#     e2e (ours, QEMU's C virtiofsd, the two sabotage runs) and conformance
#     (host FUSE mount, 6.1 and 6.12 guests, the runner's sabotage run, the
#     comparison with the Rust virtiofsd).
# With CI set, a suite that must run here fails instead of skipping. The
# last thing printed is ctest's tally of the full suite (step 4).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

bash scripts/install-deps.sh

echo "=== formatting (clang-format) and clang-tidy"
bash scripts/lint.sh

echo "=== ASan + UBSan: unit tests, and the e2e guest test against the sanitized daemon"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DVFSD_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan -L 'unit|sanitized' --output-on-failure -j"$jobs" \
    -E '^MemoryTest\.BytesPerInodeAndPerHandle$'
# (Left out by name: it measures heap bytes through mallinfo2, which the
# sanitizer's allocator does not feed; step 4 runs it.)

echo "=== libFuzzer targets (clang): regression inputs, then ${VFSD_FUZZ_SECONDS:-60} s of fuzzing each"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DVFSD_FUZZ=ON -DVFSD_BUILD_TESTS=OFF -DVFSD_FUZZ_SECONDS="${VFSD_FUZZ_SECONDS:-60}" >/dev/null
cmake --build build-fuzz -j"$jobs" --target vfsd_fuzzers
# Each target fuzzes on one core and in its own work folder: two at a time.
ctest --test-dir build-fuzz -L fuzz --output-on-failure -j"$jobs"

echo "=== Release (-O3) build of the daemon, as packagers build it"
cmake -S . -B build-release -G Ninja -DCMAKE_BUILD_TYPE=Release -DVFSD_BUILD_TESTS=OFF >/dev/null
cmake --build build-release -j"$jobs" --target virtiofsd

echo "=== full suite (unit, integration, end-to-end guest, conformance)"
cmake -S . -B build -G Ninja >/dev/null
cmake --build build -j"$jobs"
ctest --test-dir build --output-on-failure
