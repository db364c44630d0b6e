#!/usr/bin/env bash
# Conformance suite, host mode: for each profile, serve a fresh shared folder
# with `virtiofsd --shared-dir=DIR --fuse-mount=MNT <profile options>`, run the
# suite on MNT, stop the daemon with SIGTERM (it must unmount and exit 0), then
# run the profile's host-side checks on the shared folder. Seconds, no VM.
#
#   run_host.sh [--daemon PATH] [--suite PATH] [--profile NAME]... [--keep] [--verbose]
#
# Exit status: 0 every case passed, 1 a case failed, 2 usage, 77 skipped
# (not root, or no /dev/fuse).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

daemon=$ROOT/build/virtiofsd suite=$ROOT/build/tests/conformance/vfsd_conformance
keep=0 verbose=0 only=()
while (($#)); do
  case $1 in
    --daemon=*) daemon=${1#*=} ;;
    --daemon) daemon=$2; shift ;;
    --suite=*) suite=${1#*=} ;;
    --suite) suite=$2; shift ;;
    --profile=*) only+=("${1#*=}") ;;
    --profile) only+=("$2"); shift ;;
    --keep) keep=1 ;;
    --verbose) verbose=1 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
[[ -x $daemon && -x $suite ]] || { echo "daemon '$daemon' or suite '$suite' not built" >&2; exit 2; }
if ((EUID != 0)) || [[ ! -c /dev/fuse ]]; then echo "SKIP: needs root and /dev/fuse"; exit 77; fi

work=$(mktemp -d "${TMPDIR:-/tmp}/vfsd-conf-host.XXXXXX")
chmod 0755 "$work" # the suite's non-root user must reach the mount
pid=""
cleanup() {
  if [[ -n $pid ]]; then kill "$pid" 2>/dev/null || true; fi
  # Never leave a mount behind, even after a failure.
  for m in "$work"/*/mnt; do
    if grep -qs " $m " /proc/self/mounts; then umount -l "$m" 2>/dev/null || true; fi
  done
  if ((keep)); then echo "work folder kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

is_mounted() { grep -qs " $1 fuse" /proc/self/mounts; }

results=$work/results.txt
: >"$results"
failed_profiles=()
while IFS=$'\t' read -r profile _ options; do
  if ((${#only[@]})) && [[ " ${only[*]} " != *" $profile "* ]]; then continue; fi
  p=$work/$profile
  mkdir -p "$p/share" "$p/mnt"
  chmod 0755 "$p" "$p/share" "$p/mnt"
  read -r -a opts <<<"$options"
  "$suite" prepare "$profile" "$p/share" || { echo "CONF host.$profile/prepare FAIL expected=0 got=1" >>"$results"; continue; }
  "$daemon" --shared-dir="$p/share" --fuse-mount="$p/mnt" "${opts[@]}" >"$p/daemon.log" 2>&1 &
  pid=$!
  for ((i = 0; i < 100; i++)); do
    is_mounted "$p/mnt" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if ! is_mounted "$p/mnt"; then
    echo "CONF host.$profile/mount FAIL expected=mounted got=not_mounted" | tee -a "$results"
    sed 's/^/  | /' "$p/daemon.log"
    kill "$pid" 2>/dev/null || true
    pid=""
    failed_profiles+=("$profile")
    continue
  fi
  echo "== profile $profile: ${options:-(no options)}"
  rc=0
  timeout --kill-after=5 240 "$suite" run --mode=host --profile="$profile" --backing="$p/share" \
    "$p/mnt" >"$p/run.txt" 2>&1 || rc=$?
  cat "$p/run.txt" >>"$results"
  # Clean stop: SIGTERM unmounts and exits 0.
  kill -TERM "$pid" 2>/dev/null || true
  stop_rc=0
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    stop_rc=timeout
  fi
  wait "$pid" 2>/dev/null || stop_rc=${stop_rc/0/$?}
  pid=""
  if [[ $stop_rc == 0 ]] && ! is_mounted "$p/mnt"; then
    echo "CONF host.$profile/sigterm_unmounts PASS expected=0,unmounted got=0,unmounted" >>"$results"
  else
    echo "CONF host.$profile/sigterm_unmounts FAIL expected=0,unmounted got=$stop_rc,$(is_mounted "$p/mnt" && echo mounted || echo unmounted)" >>"$results"
    umount -l "$p/mnt" 2>/dev/null || true
  fi
  "$suite" check "$profile" "$p/share" >"$p/check.txt" 2>&1 || true
  cat "$p/check.txt" >>"$results"
  if ((verbose)); then
    cat "$p/run.txt" "$p/check.txt"
  else
    grep -hE '^CONF .* (FAIL|SKIP) |^CONF-SUMMARY' "$p/run.txt" "$p/check.txt" || true
  fi
  if ((rc != 0 && rc != 1)); then
    echo "CONF host.$profile/suite_exit FAIL expected=0_or_1 got=$rc" | tee -a "$results"
  fi
  grep -q '^CONF-SUMMARY' "$p/run.txt" || echo "CONF host.$profile/summary FAIL expected=CONF-SUMMARY got=missing" | tee -a "$results"
  if grep -q '^CONF .* FAIL ' "$p/run.txt" "$p/check.txt" ||
    grep -q "^CONF host.$profile/.* FAIL " "$results"; then
    failed_profiles+=("$profile")
    tail -n 5 "$p/daemon.log" | sed 's/^/  daemon| /'
  fi
done < <("$suite" profiles)

passed=$(grep -c '^CONF [^ ]* PASS' "$results" || true)
failed=$(grep -c '^CONF [^ ]* FAIL' "$results" || true)
skipped=$(grep -c '^CONF [^ ]* SKIP' "$results" || true)
echo "CONF-TOTAL mode=host kernel=$(uname -r) passed=$passed failed=$failed skipped=$skipped"
if ((${#failed_profiles[@]} || failed)); then
  echo "CONFORMANCE HOST: FAIL (profiles: ${failed_profiles[*]})"
  keep=1
  exit 1
fi
echo "CONFORMANCE HOST: PASS"
