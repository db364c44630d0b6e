#!/usr/bin/env bash
# Conformance suite, host mode: for each profile, serve a fresh shared folder
# with `virtiofsd --shared-dir=DIR --fuse-mount=MNT <profile options>`, run the
# suite on MNT, stop the daemon with SIGTERM (it must still be running, then
# unmount and exit 0), then run the profile's host-side checks on the shared
# folder. Seconds, no VM.
#
#   run_host.sh [--daemon PATH] [--suite PATH] [--profile NAME]... [--timeout S]
#               [--keep] [--verbose]
#
# As in run_guest.sh, a profile whose output is incomplete (a case of
# `vfsd_conformance groups PROFILE` without a verdict, a CONF-SUMMARY that is
# missing, does not add up or says failed!=0, an exit status that disagrees)
# fails, as does a daemon that died early or logged a sanitizer report.
# --timeout bounds the whole run (default 200 s; ctest allows more).
#
# Exit status: 0 every case passed, 1 a case failed, 2 usage, 77 skipped
# (not root, or no /dev/fuse; with CI set, exit 1 instead).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../e2e/lib.sh
source "$HERE/../e2e/lib.sh"
# shellcheck source=verify.sh
source "$HERE/verify.sh"
ROOT=$VFSD_ROOT

daemon=$ROOT/build/virtiofsd suite=$ROOT/build/tests/conformance/vfsd_conformance
keep=0 verbose=0 only=() limit=200
while (($#)); do
  case $1 in
    --daemon=*) daemon=${1#*=} ;;
    --daemon) daemon=$2; shift ;;
    --suite=*) suite=${1#*=} ;;
    --suite) suite=$2; shift ;;
    --profile=*) only+=("${1#*=}") ;;
    --profile) only+=("$2"); shift ;;
    --timeout=*) limit=${1#*=} ;;
    --timeout) limit=$2; shift ;;
    --keep) keep=1 ;;
    --verbose) verbose=1 ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
[[ -x $daemon && -x $suite ]] || { echo "daemon '$daemon' or suite '$suite' not built" >&2; exit 2; }
if ((EUID != 0)) || [[ ! -c /dev/fuse ]]; then vfsd_skip "needs root and /dev/fuse"; fi
deadline=$((SECONDS + limit))

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

vfsd_sanitizer_env
results=$work/results.txt
: >"$results"
failed_profiles=()
while IFS=$'\t' read -r profile _ options; do
  if ((${#only[@]})) && [[ " ${only[*]} " != *" $profile "* ]]; then continue; fi
  p=$work/$profile
  mkdir -p "$p/share" "$p/mnt"
  chmod 0755 "$p" "$p/share" "$p/mnt"
  read -r -a opts <<<"$options"
  "$suite" groups "$profile" | cut -d' ' -f2 >"$p/expected-run.txt"
  "$suite" checks "$profile" | cut -d' ' -f2 >"$p/expected-check.txt"
  "$suite" prepare "$profile" "$p/share" || {
    echo "CONF host.$profile/prepare FAIL expected=0 got=1" >>"$results"
    failed_profiles+=("$profile")
    continue
  }
  "$daemon" --shared-dir="$p/share" --fuse-mount="$p/mnt" "${opts[@]}" >"$p/daemon.log" 2>&1 &
  pid=$!
  for ((i = 0; i < 300; i++)); do
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
  left=$((deadline - SECONDS))
  ((left > 0)) || left=1
  rc=0
  timeout --kill-after=5 "$left" "$suite" run --mode=host --profile="$profile" --backing="$p/share" \
    "$p/mnt" >"$p/run.txt" 2>&1 || rc=$?
  {
    cat "$p/run.txt"
    if ((rc == 124 || rc == 137)); then
      echo "CONF host.$profile/time_limit FAIL expected=within_${limit}s got=killed"
    fi
    conf_verify "$profile" run "$p/run.txt" "$rc" "$p/expected-run.txt"
  } | grep '^CONF ' >>"$results"
  # Clean stop: the daemon still serves, SIGTERM unmounts and exits 0.
  if kill -0 "$pid" 2>/dev/null; then
    echo "CONF host.$profile/daemon_alive PASS expected=running got=running" >>"$results"
  else
    echo "CONF host.$profile/daemon_alive FAIL expected=running got=exited_during_the_run" >>"$results"
  fi
  kill -TERM "$pid" 2>/dev/null || true
  stop_rc=0
  for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
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
  if reports=$(vfsd_sanitizer_reports "$p/daemon.log"); then
    echo "CONF host.$profile/daemon_sanitizers FAIL expected=none got=$(wc -l <<<"$reports")_report_lines" >>"$results"
  fi
  check_rc=0
  "$suite" check "$profile" "$p/share" >"$p/check.txt" 2>&1 || check_rc=$?
  {
    cat "$p/check.txt"
    conf_verify "$profile" check "$p/check.txt" "$check_rc" "$p/expected-check.txt"
  } | grep '^CONF ' >>"$results"
  if ((verbose)); then
    cat "$p/run.txt" "$p/check.txt"
  else
    grep -hE '^CONF .* (FAIL|SKIP) |^CONF-SUMMARY' "$p/run.txt" "$p/check.txt" || true
  fi
  if grep -qE "^CONF (host|harness)\\.$profile/.* FAIL " "$results" ||
    grep -q '^CONF .* FAIL ' "$p/run.txt" "$p/check.txt"; then
    failed_profiles+=("$profile")
    grep -E "^CONF (host|harness)\\.$profile/.* FAIL " "$results" || true
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
