#!/usr/bin/env bash
# Conformance suite, guest mode: ONE guest boot (QEMU, TCG) per kernel with
# one vhost-user-fs device per profile, each served by its own daemon started
# with that profile's options over a fresh shared folder. The static suite in
# the initramfs mounts each tag at /mnt/<profile> and runs; its lines come
# back on the console. After poweroff the host runs each profile's checks.
#
#   run_guest.sh --kernel=6.1|6.12 [--daemon=ours|rust] [--binary PATH]
#                [--suite PATH] [--profile NAME]... [--timeout S] [--keep]
#                [--verbose] [--results FILE]
#
# --daemon=rust runs the profiles the Rust virtiofsd 1.13 has options for
# (`vfsd_conformance profiles`, column 2 "both").
# Exit status: 0 all passed, 1 a case failed, 2 usage, 77 skipped (kernel or
# Rust virtiofsd not fetched).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../e2e/lib.sh
source "$HERE/../e2e/lib.sh"

kernel=6.1 daemon=ours binary=$VFSD_ROOT/build/virtiofsd
suite=$VFSD_ROOT/build/tests/conformance/vfsd_conformance
limit=900 keep=0 only=() results_out=""
while (($#)); do
  case $1 in
    --kernel=*) kernel=${1#*=} ;;
    --daemon=*) daemon=${1#*=} ;;
    --binary=*) binary=${1#*=} ;;
    --binary) binary=$2; shift ;;
    --suite=*) suite=${1#*=} ;;
    --suite) suite=$2; shift ;;
    --profile=*) only+=("${1#*=}") ;;
    --timeout=*) limit=${1#*=} ;;
    --results=*) results_out=${1#*=} ;;
    --keep) keep=1 ;;
    --verbose) export VFSD_VERBOSE=1 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
export VFSD_KERNEL_ROOT=$VFSD_ROOT/.cache/kernel-$kernel/root
vfsd_kernel_image >/dev/null || { echo "SKIP: no $kernel guest kernel (scripts/install-deps.sh)"; exit 77; }
[[ -x $suite ]] || { echo "suite '$suite' is not built" >&2; exit 2; }
case $daemon in
  ours) [[ -x $binary ]] || { echo "daemon '$binary' is not built" >&2; exit 2; } ;;
  rust) rust_cmd=$(vfsd_rust_command) || { echo "SKIP: Rust virtiofsd not fetched (scripts/fetch-rust-virtiofsd.sh)"; exit 77; } ;;
  *) echo "--daemon=ours|rust" >&2; exit 2 ;;
esac

work=$(mktemp -d "${TMPDIR:-/tmp}/vfsd-conf-guest.XXXXXX")
chmod 0755 "$work"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if ((keep)); then echo "work folder kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

# ---- one daemon per profile ------------------------------------------------------
profiles=() devices=""
while IFS=$'\t' read -r profile who options; do
  if ((${#only[@]})) && [[ " ${only[*]} " != *" $profile "* ]]; then continue; fi
  [[ $daemon == rust && $who != both ]] && continue
  p=$work/$profile
  mkdir -p "$p/share"
  chmod 0755 "$p" "$p/share"
  "$suite" prepare "$profile" "$p/share" || { echo "prepare $profile failed" >&2; exit 1; }
  read -r -a opts <<<"$options"
  sock=$work/$profile.sock
  if [[ $daemon == ours ]]; then
    cmd=("$binary" "--socket-path=$sock" "--shared-dir=$p/share" "${opts[@]}")
  else
    # shellcheck disable=SC2206
    cmd=($rust_cmd "--socket-path=$sock" "--shared-dir=$p/share" --sandbox=chroot "${opts[@]}")
  fi
  echo "+ ${cmd[*]}" >"$p/daemon.log"
  "${cmd[@]}" >>"$p/daemon.log" 2>&1 &
  pids+=($!)
  for ((i = 0; i < 100; i++)); do
    [[ -S $sock ]] && break
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  if [[ ! -S $sock ]]; then
    echo "daemon for profile $profile did not start:" >&2
    sed 's/^/  | /' "$p/daemon.log" >&2
    exit 1
  fi
  profiles+=("$profile")
  devices+=" $profile=$sock"
done < <("$suite" profiles)

echo "CONF_PROFILES=\"${profiles[*]}\"" >"$work/env.sh"
vfsd_build_initramfs "$work/initrd" "$HERE/guest/run_conf.sh" "$work/env.sh:/guest/env.sh" \
  "$suite:/guest/vfsd_conformance"

echo "== conformance guest: kernel $kernel, daemon $daemon, profiles: ${profiles[*]}"
qemu_rc=0
VFSD_DAEMON_PID="" VFSD_FS_DEVICES=$devices \
  vfsd_boot_guest "$work/none.sock" "$work/initrd" "$work/console.log" "$limit" || qemu_rc=$?

# Daemons exit when QEMU disconnects; give them a moment, then stop them.
for ((i = 0; i < 50; i++)); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  ((alive)) || break
  sleep 0.1
done
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
pids=()

# ---- results ------------------------------------------------------------------------
results=$work/results.txt
: >"$results"
guest_kernel=$(vfsd_console_lines "$work/console.log" 'CONF-GUEST ' | sed -n 's/.*kernel=\([^ ]*\).*/\1/p' | head -n 1)
for profile in "${profiles[@]}"; do
  vfsd_console_lines "$work/console.log" "CONF\\[$profile\\] " | sed "s/^CONF\\[$profile\\] //" \
    >"$work/$profile/run.txt"
  {
    cat "$work/$profile/run.txt"
    grep -q '^CONF-SUMMARY' "$work/$profile/run.txt" ||
      echo "CONF guest.$profile/summary FAIL expected=CONF-SUMMARY got=missing"
    "$suite" check "$profile" "$work/$profile/share" 2>&1 || true
  } | sed "s/^CONF /CONF $profile:/" >>"$results"
done
if ((qemu_rc != 0)); then
  echo "CONF guest/qemu FAIL expected=0 got=$qemu_rc" >>"$results"
fi
vfsd_console_lines "$work/console.log" 'CONF-GUEST-DONE' | grep -q . ||
  echo "CONF guest/finished FAIL expected=CONF-GUEST-DONE got=missing" >>"$results"
if grep -qE 'Kernel panic|Oops|BUG:|WARNING: CPU|Call Trace' "$work/console.log"; then
  echo "CONF guest/no_kernel_oops FAIL expected=clean_console got=oops" >>"$results"
fi
[[ -n $results_out ]] && cp "$results" "$results_out"

grep -E '^CONF [^ ]* (FAIL|SKIP) ' "$results" || true
passed=$(grep -c '^CONF [^ ]* PASS' "$results" || true)
failed=$(grep -c '^CONF [^ ]* FAIL' "$results" || true)
skipped=$(grep -c '^CONF [^ ]* SKIP' "$results" || true)
echo "CONF-TOTAL mode=guest daemon=$daemon kernel=${guest_kernel:-?} passed=$passed failed=$failed skipped=$skipped"
if ((failed)); then
  echo "CONFORMANCE GUEST: FAIL"
  echo "--- last console lines ---"
  grep -v 'CONF' "$work/console.log" | tail -n 15 | cut -d' ' -f2-
  keep=1
  exit 1
fi
echo "CONFORMANCE GUEST: PASS"
