#!/usr/bin/env bash
# Runs the guest mode of the conformance suite against the Rust virtiofsd
# 1.13 and against ours, on the same profiles (those the Rust daemon has
# options for) and kernels, and compares every verdict. It FAILS on any
# difference that is not listed in known_rust_differences.txt (the list that
# docs/compatibility.md explains), on a listed difference that no longer
# happens (the list must stay true), and when either run is missing results
# (a run that did not finish, a case without a verdict: both runs are
# complete or the comparison means nothing). ctest `conformance_vs_rust`.
#
#   run_against_rust.sh [--kernel=6.1|6.12]... [--binary PATH] [--suite PATH]
#                       [--known FILE] [--out DIR] [--timeout S]
#
# Exit status: 0 only the listed differences, 1 otherwise, 2 usage, 77 the
# Rust virtiofsd or a kernel is missing (with CI set, exit 1 instead).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../e2e/lib.sh
source "$HERE/../e2e/lib.sh"
ROOT=$VFSD_ROOT
binary=$ROOT/build/virtiofsd suite=$ROOT/build/tests/conformance/vfsd_conformance
known=$HERE/known_rust_differences.txt
kernels=() out="" limit=300
while (($#)); do
  case $1 in
    --kernel=*) kernels+=("${1#*=}") ;;
    --binary=*) binary=${1#*=} ;;
    --binary) binary=$2; shift ;;
    --suite=*) suite=${1#*=} ;;
    --suite) suite=$2; shift ;;
    --known=*) known=${1#*=} ;;
    --out=*) out=${1#*=} ;;
    --out) out=$2; shift ;;
    --known) known=$2; shift ;;
    --timeout=*) limit=${1#*=} ;;
    --timeout) limit=$2; shift ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
((${#kernels[@]})) || kernels=(6.1 6.12)
[[ -x $suite && -x $binary ]] || { echo "daemon '$binary' or suite '$suite' not built" >&2; exit 2; }
[[ -f $known ]] || { echo "no list of known differences: $known" >&2; exit 2; }
rust_cmd=$(vfsd_rust_command) || vfsd_skip "Rust virtiofsd not fetched (scripts/install-deps.sh)"
for k in "${kernels[@]}"; do
  VFSD_KERNEL_ROOT=$ROOT/.cache/kernel-$k/root vfsd_kernel_image >/dev/null ||
    vfsd_skip "no $k guest kernel (scripts/install-deps.sh)"
done
# shellcheck disable=SC2086
echo "Rust: $($rust_cmd --version 2>&1 | head -n 1); ours: $("$binary" --version 2>&1 | head -n 1)"
keep_out=1
if [[ -z $out ]]; then
  out=$(mktemp -d "${TMPDIR:-/tmp}/vfsd-vs-rust.XXXXXX")
  keep_out=0
fi
mkdir -p "$out"
mapfile -t both < <("$suite" profiles | awk -F'\t' '$2 == "both" {print $1}')
prof_args=()
for p in "${both[@]}"; do prof_args+=("--profile=$p"); done

# "CONF key VERDICT expected=E got=G step=S ..." -> "key<TAB>VERDICT got=G step=S".
# The per-profile summary and exit lines follow from the cases (Rust fails
# some), which are compared one by one; everything else is compared,
# including completeness, the daemons' exit and the guest's kernel checks.
normalize() {
  sed -n 's/^CONF \([^ ]*\) \(PASS\|FAIL\|SKIP\) expected=[^ ]* \(got=[^ ]*\)\( step=[^ ]*\)\{0,1\}.*/\1\t\2 \3\4/p' "$1" |
    grep -vE '^[^:]*:harness\.[^/]*/(run|check)_(summary|exit)'$'\t' | sort
}

# The known differences: "KERNEL KEY OURS RUST REASON...", KERNEL a version
# or "*", OURS/RUST the verdicts (PASS|FAIL|SKIP|MISSING).
declare -A listed=() used=()
while read -r k key o r reason; do
  [[ -z $k || $k == \#* ]] && continue
  [[ -n $reason ]] || { echo "known_rust_differences: no reason given for $k $key" >&2; exit 2; }
  listed["$k $key"]="$o $r"
done <"$known"
expect_of() { # kernel key -> "OURS RUST" or nothing; marks the entry seen
  local v=${listed["$1 $2"]:-}
  if [[ -n $v ]]; then used["$1 $2|$1"]=1; echo "$v"; return; fi
  v=${listed["* $2"]:-}
  if [[ -n $v ]]; then used["* $2|$1"]=1; echo "$v"; fi
}

problems=0
for k in "${kernels[@]}"; do
  for d in rust ours; do
    echo "== kernel $k, daemon $d"
    rc=0
    rm -f "$out/$d-$k.txt"
    "$HERE/run_guest.sh" --kernel="$k" --daemon="$d" --binary "$binary" --suite "$suite" \
      --timeout="$limit" "${prof_args[@]}" --results="$out/$d-$k.txt" >"$out/$d-$k.log" 2>&1 || rc=$?
    grep -E '^CONF-TOTAL' "$out/$d-$k.log" || true
    if [[ ! -s $out/$d-$k.txt ]]; then
      echo "MISSING $k $d: the run left no results (status $rc); its log:"
      tail -n 20 "$out/$d-$k.log" | sed 's/^/   | /'
      problems=$((problems + 1))
    fi
  done
  [[ -s $out/ours-$k.txt && -s $out/rust-$k.txt ]] || continue
  echo "== differences on kernel $k (ours | rust)"
  n=0 unexpected=0
  while IFS=$'\t' read -r key o r; do
    [[ $o == "$r" ]] && continue
    n=$((n + 1))
    want=""
    expect_of "$k" "$key" >"$out/.want"  # not in a subshell: it marks `used`
    want=$(<"$out/.want")
    if [[ -n $want && $want == "${o%% *} ${r%% *}" ]]; then
      printf 'known      %s %s\n   ours: %s\n   rust: %s\n' "$k" "$key" "$o" "$r"
    else
      printf 'UNEXPECTED %s %s%s\n   ours: %s\n   rust: %s\n' "$k" "$key" \
        "${want:+ (listed as ours=${want% *} rust=${want#* })}" "$o" "$r"
      unexpected=$((unexpected + 1))
    fi
  done < <(join -t $'\t' -a1 -a2 -e MISSING -o 0,1.2,2.2 <(normalize "$out/ours-$k.txt") \
    <(normalize "$out/rust-$k.txt"))
  echo "kernel $k: $n differences, $unexpected not in $(basename "$known")"
  problems=$((problems + unexpected))
done
# A listed difference that did not happen on a kernel that ran: the list,
# and docs/compatibility.md, no longer describe what is true.
# ("*" entries: on every kernel that ran.)
for entry in "${!listed[@]}"; do
  k=${entry%% *}
  for kk in "${kernels[@]}"; do
    [[ $k == "*" || $k == "$kk" ]] || continue
    [[ -s $out/ours-$kk.txt && -s $out/rust-$kk.txt ]] || continue
    if [[ -z ${used["$entry|$kk"]:-} ]]; then
      echo "STALE      $kk ${entry#* }: listed in $(basename "$known") ($k) but not seen"
      problems=$((problems + 1))
    fi
  done
done
if ((problems)); then
  echo "results in $out"
  echo "RUST COMPARISON: FAIL ($problems problems: unexpected differences, stale entries or missing results)"
  exit 1
fi
if ((keep_out)); then echo "results in $out"; else rm -rf "$out"; fi
echo "RUST COMPARISON: PASS (only the differences listed in $(basename "$known"))"
