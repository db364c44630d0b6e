#!/usr/bin/env bash
# (Re)builds the committed seed corpus, tests/fuzz/corpus/<target>/:
#
#   tests/fuzz/make_corpus.sh BUILD_DIR [RECORDINGS_DIR]... [-- EXTRA_DIR...]
#
# BUILD_DIR is a -DVFSD_FUZZ=ON build (scripts/test.sh: build-fuzz). The raw
# seeds come from vfsd_make_seeds: the request sequences it builds, plus the
# traffic of every RECORDINGS_DIR (made with vfsd_record, see
# docs/security.md, "Fuzzing"). Each target then keeps the smallest set of
# inputs that covers what all of them cover (libFuzzer -merge=1, starting
# from an empty folder, so the corpus holds nothing else). EXTRA_DIR/<target>
# folders (e.g. the work corpora of long local runs) join the merge.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: $0 BUILD_DIR [RECORDINGS_DIR]... [-- EXTRA_DIR...]}
shift
recordings=() extra=()
while (($#)); do
  if [[ $1 == -- ]]; then
    shift
    extra=("$@")
    break
  fi
  recordings+=("$1")
  shift
done
bin=$build/tests/fuzz
raw=$(mktemp -d)
trap 'rm -rf "$raw"' EXIT

"$bin/vfsd_make_seeds" "$raw/built"
i=0
for rec in "${recordings[@]}"; do
  "$bin/vfsd_make_seeds" "$raw/rec$i" --recordings "$rec"
  i=$((i + 1))
done

declare -A max_len=([fuse_fake]=65536 [fuse_passthrough]=65536 [virtqueue]=32768
  [vhost_user]=65536 [xattrmap]=4096 [cmdline]=4096)
# TARGETS="a b" limits the merge to those targets.
for target in ${TARGETS:-fuse_fake fuse_passthrough virtqueue vhost_user xattrmap cmdline}; do
  sources=()
  for d in "$raw"/*/"$target" ; do [[ -d $d ]] && sources+=("$d"); done
  for d in "${extra[@]}"; do [[ -d $d/$target ]] && sources+=("$d/$target"); done
  out=$here/corpus/$target
  rm -rf "$out.new"
  mkdir -p "$out.new"
  "$bin/fuzz_$target" -merge=1 -max_len="${max_len[$target]}" -timeout=10 -rss_limit_mb=2560 \
    "$out.new" "${sources[@]}" >"$raw/merge-$target.log" 2>&1 ||
    { tail -n 30 "$raw/merge-$target.log"; echo "make_corpus: merge of $target failed" >&2; exit 1; }
  rm -rf "$out"
  mv "$out.new" "$out"
  echo "make_corpus: $target: $(find "$out" -type f | wc -l) inputs, $(du -sk --apparent-size "$out" | cut -f1) KiB" \
    "($(grep -o 'MERGE-OUTER: [0-9]* new files with [0-9]* new features' "$raw/merge-$target.log" | tail -n 1))"
done
