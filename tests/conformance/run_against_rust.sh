#!/usr/bin/env bash
# Runs the guest mode of the conformance suite against the Rust virtiofsd
# 1.13.2 and against ours, on the same profiles (those the Rust daemon has
# options for) and kernels, and prints every case whose result differs.
# Not a ctest test: a tool whose output docs/compatibility.md explains.
#
#   run_against_rust.sh [--kernel=6.1|6.12]... [--binary PATH] [--suite PATH] [--out DIR]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
binary=$ROOT/build/virtiofsd suite=$ROOT/build/tests/conformance/vfsd_conformance
kernels=() out=""
while (($#)); do
  case $1 in
    --kernel=*) kernels+=("${1#*=}") ;;
    --binary=*) binary=${1#*=} ;;
    --binary) binary=$2; shift ;;
    --suite=*) suite=${1#*=} ;;
    --suite) suite=$2; shift ;;
    --out=*) out=${1#*=} ;;
    -h | --help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
((${#kernels[@]})) || kernels=(6.1 6.12)
[[ -n $out ]] || out=$(mktemp -d "${TMPDIR:-/tmp}/vfsd-vs-rust.XXXXXX")
mkdir -p "$out"
mapfile -t both < <("$suite" profiles | awk -F'\t' '$2 == "both" {print $1}')
prof_args=()
for p in "${both[@]}"; do prof_args+=("--profile=$p"); done

# "CONF profile:group/case VERDICT expected=E got=G step=S ..." -> "key<TAB>VERDICT got=G step=S"
normalize() {
  sed -n 's/^CONF \([^ ]*\) \(PASS\|FAIL\|SKIP\) expected=[^ ]* \(got=[^ ]*\)\( step=[^ ]*\)\{0,1\}.*/\1\t\2 \3\4/p' "$1" | sort
}

status=0
for k in "${kernels[@]}"; do
  for d in rust ours; do
    echo "== kernel $k, daemon $d"
    "$HERE/run_guest.sh" --kernel="$k" --daemon="$d" --binary "$binary" --suite "$suite" \
      "${prof_args[@]}" --results="$out/$d-$k.txt" | grep -E '^CONF-TOTAL' || true
  done
  echo "== differences on kernel $k (ours | rust)"
  join -t $'\t' -a1 -a2 -e MISSING -o 0,1.2,2.2 <(normalize "$out/ours-$k.txt") \
    <(normalize "$out/rust-$k.txt") | awk -F'\t' -v k="$k" '$2 != $3 {printf "DIFF %s %s\n   ours: %s\n   rust: %s\n", k, $1, $2, $3; n++} END {print "differences: " n+0}'
done
echo "results in $out"
exit $status
