#!/usr/bin/env bash
# Conformance suite, guest mode: ONE guest boot (QEMU, TCG) per kernel with
# one vhost-user-fs device per profile, each served by its own daemon started
# with that profile's options over a fresh shared folder. The static suite in
# the initramfs mounts each tag at /mnt/<profile> and runs; its lines come
# back on the console. After poweroff the host runs each profile's checks.
#
#   run_guest.sh --kernel=6.1|6.12 [--daemon=ours|rust] [--binary PATH]
#                [--suite PATH] [--profile NAME]... [--timeout S] [--keep]
#                [--verbose] [--results FILE] [--sabotage]
#
# --daemon=rust runs the profiles the Rust virtiofsd 1.13 has options for
# (`vfsd_conformance profiles`, column 2 "both").
# --timeout bounds the guest (default 300 s); ctest's TIMEOUT is larger, so
# a hung guest is reported by this script, with the cases that did not run.
#
# Besides every case's verdict, the run fails when a profile's output is
# incomplete (a case of `vfsd_conformance groups PROFILE` printed no verdict,
# the CONF-SUMMARY is missing, does not add up or says failed!=0, the suite's
# exit status disagrees), when the guest cannot mount or unmount a profile,
# when a daemon does not exit by itself with status 0 after QEMU quits or
# logs a sanitizer report, and on any kernel warning, BUG or oops in the
# guest (console or dmesg).
#
# --sabotage proves those checks can fail (needs at least 3 profiles): the
# guest drops the first case's line of the first profile, keeps the second
# profile's mount busy so its umount fails, and the third profile's daemon
# is wrapped to exit 3. The run must then fail with exactly those findings;
# it prints "CONF SABOTAGE DETECTED" when it does.
#
# Exit status: 0 all passed, 1 a case or check failed, 2 usage, 77 skipped
# (kernel or Rust virtiofsd not fetched; with CI set, exit 1 instead).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../e2e/lib.sh
source "$HERE/../e2e/lib.sh"
# shellcheck source=verify.sh
source "$HERE/verify.sh"

kernel=6.1 daemon=ours binary=$VFSD_ROOT/build/virtiofsd
suite=$VFSD_ROOT/build/tests/conformance/vfsd_conformance
limit=300 keep=0 only=() results_out="" sabotage=0
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
    --timeout) limit=$2; shift ;;
    --results=*) results_out=${1#*=} ;;
    --sabotage) sabotage=1 ;;
    --keep) keep=1 ;;
    --verbose) export VFSD_VERBOSE=1 ;;
    -h | --help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
export VFSD_KERNEL_ROOT=$VFSD_ROOT/.cache/kernel-$kernel/root
vfsd_kernel_image >/dev/null || vfsd_skip "no $kernel guest kernel (scripts/install-deps.sh)"
[[ -x $suite ]] || { echo "suite '$suite' is not built" >&2; exit 2; }
case $daemon in
  ours) [[ -x $binary ]] || { echo "daemon '$binary' is not built" >&2; exit 2; } ;;
  rust) rust_cmd=$(vfsd_rust_command) || vfsd_skip "Rust virtiofsd not fetched (scripts/install-deps.sh)" ;;
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
declare -A pid_of=()
while IFS=$'\t' read -r profile who options; do
  if ((${#only[@]})) && [[ " ${only[*]} " != *" $profile "* ]]; then continue; fi
  [[ $daemon == rust && $who != both ]] && continue
  profiles+=("$profile")
done < <("$suite" profiles)
((${#profiles[@]})) || { echo "no profile to run" >&2; exit 2; }
if ((sabotage)) && ((${#profiles[@]} < 3)); then
  echo "--sabotage needs at least 3 profiles" >&2
  exit 2
fi

for profile in "${profiles[@]}"; do
  options=$("$suite" profiles | awk -F'\t' -v p="$profile" '$1 == p {print $3}')
  p=$work/$profile
  mkdir -p "$p/share"
  chmod 0755 "$p" "$p/share"
  "$suite" prepare "$profile" "$p/share" || { echo "prepare $profile failed" >&2; exit 1; }
  "$suite" groups "$profile" | cut -d' ' -f2 >"$p/expected-run.txt"
  "$suite" checks "$profile" | cut -d' ' -f2 >"$p/expected-check.txt"
  read -r -a opts <<<"$options"
  sock=$work/$profile.sock
  if [[ $daemon == ours ]]; then
    vfsd_sanitizer_env
    cmd=("$binary" "--socket-path=$sock" "--shared-dir=$p/share" "${opts[@]}")
  else
    # shellcheck disable=SC2206
    cmd=($rust_cmd "--socket-path=$sock" "--shared-dir=$p/share" --sandbox=chroot "${opts[@]}")
  fi
  if ((sabotage)) && [[ $profile == "${profiles[2]}" ]]; then
    # The daemon serves as usual; its wrapper exits 3 after it.
    cmd=(sh -c '"$@"; exit 3' sabotage "${cmd[@]}")
  fi
  echo "+ ${cmd[*]}" >"$p/daemon.log"
  "${cmd[@]}" >>"$p/daemon.log" 2>&1 &
  pids+=($!)
  pid_of[$profile]=$!
  for ((i = 0; i < 300; i++)); do
    [[ -S $sock ]] && break
    kill -0 "${pids[-1]}" 2>/dev/null || break
    sleep 0.1
  done
  if [[ ! -S $sock ]]; then
    echo "daemon for profile $profile did not start:" >&2
    sed 's/^/  | /' "$p/daemon.log" >&2
    exit 1
  fi
  devices+=" $profile=$sock"
done

{
  echo "CONF_PROFILES=\"${profiles[*]}\""
  if ((sabotage)); then
    echo "CONF_SABOTAGE_DROP=\"${profiles[0]} $(head -n 1 "$work/${profiles[0]}/expected-run.txt")\""
    echo "CONF_SABOTAGE_BUSY=${profiles[1]}"
  fi
} >"$work/env.sh"
vfsd_build_initramfs "$work/initrd" "$HERE/guest/run_conf.sh" "$work/env.sh:/guest/env.sh" \
  "$suite:/guest/vfsd_conformance"

if ((sabotage)); then echo "== SABOTAGE run: must FAIL"; fi
echo "== conformance guest: kernel $kernel, daemon $daemon, profiles: ${profiles[*]}"
qemu_rc=0
VFSD_DAEMON_PID="" VFSD_DAEMON_PIDS="${pids[*]}" VFSD_FS_DEVICES=$devices \
  vfsd_boot_guest "$work/none.sock" "$work/initrd" "$work/console.log" "$limit" || qemu_rc=$?

# Each daemon must exit by itself, status 0, once QEMU has disconnected.
declare -A status_of=()
for ((i = 0; i < 300; i++)); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  ((alive)) || break
  sleep 0.1
done
for profile in "${profiles[@]}"; do
  pid=${pid_of[$profile]}
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    status_of[$profile]=still_running_30s_after_qemu
  else
    rc=0
    wait "$pid" 2>/dev/null || rc=$?
    status_of[$profile]=$rc
  fi
done
pids=()

# ---- results ------------------------------------------------------------------------
# One line per verdict: "CONF <profile>:<label> PASS|FAIL|SKIP ..." for the
# profiles, "CONF guest/<check> ..." for the whole boot.
results=$work/results.txt
: >"$results"
guest_kernel=$(vfsd_console_lines "$work/console.log" 'CONF-GUEST ' | sed -n 's/.*kernel=\([^ ]*\).*/\1/p' | head -n 1)
for profile in "${profiles[@]}"; do
  p=$work/$profile
  vfsd_console_lines "$work/console.log" "CONF\\[$profile\\] " | sed "s/^CONF\\[$profile\\] //" \
    >"$p/console.txt"
  # The suite's own lines, and this payload's guest/* verdicts.
  grep -v '^CONF guest/' "$p/console.txt" | grep -v '^CONF-EXIT ' >"$p/run.txt" || true
  suite_exit=$(sed -n 's/^CONF-EXIT \([0-9]*\)$/\1/p' "$p/console.txt" | head -n 1)
  check_exit=0
  "$suite" check "$profile" "$p/share" >"$p/check.txt" 2>&1 || check_exit=$?
  {
    grep '^CONF guest/' "$p/console.txt" || true
    for want in mount umount; do
      grep -q "^CONF guest/$want " "$p/console.txt" ||
        echo "CONF guest/$want FAIL expected=verdict got=missing"
    done
    cat "$p/run.txt"
    conf_verify "$profile" run "$p/run.txt" "${suite_exit:-missing}" "$p/expected-run.txt"
    cat "$p/check.txt"
    conf_verify "$profile" check "$p/check.txt" "$check_exit" "$p/expected-check.txt"
    conf_daemon_verdicts "$profile" "${status_of[$profile]}" "$p/daemon.log"
  } | grep '^CONF ' | sed "s/^CONF /CONF $profile:/" >>"$results"
done
if [[ -f $work/console.log.daemon-died ]]; then
  echo "CONF guest/daemons_alive FAIL expected=alive got=$(tr ' ' _ <"$work/console.log.daemon-died")" >>"$results"
else
  echo "CONF guest/daemons_alive PASS expected=alive got=alive" >>"$results"
fi
if ((qemu_rc != 0)); then
  echo "CONF guest/qemu FAIL expected=0 got=$qemu_rc" >>"$results"
else
  echo "CONF guest/qemu PASS expected=0 got=0" >>"$results"
fi
if vfsd_console_lines "$work/console.log" 'CONF-GUEST-DONE' | grep -q .; then
  echo "CONF guest/finished PASS expected=CONF-GUEST-DONE got=CONF-GUEST-DONE" >>"$results"
else
  echo "CONF guest/finished FAIL expected=CONF-GUEST-DONE got=missing" >>"$results"
fi
while read -r name res rest; do
  got=${rest:-clean}
  echo "CONF guest/$name $res expected=clean got=${got// /_}" >>"$results"
done < <(vfsd_kernel_checks "$work/console.log" 1)
[[ -n $results_out ]] && cp "$results" "$results_out"

grep -E '^CONF [^ ]* (FAIL|SKIP) ' "$results" || true
passed=$(grep -c '^CONF [^ ]* PASS' "$results" || true)
failed=$(grep -c '^CONF [^ ]* FAIL' "$results" || true)
skipped=$(grep -c '^CONF [^ ]* SKIP' "$results" || true)
echo "CONF-TOTAL mode=guest daemon=$daemon kernel=${guest_kernel:-?} passed=$passed failed=$failed skipped=$skipped"
if ((failed)); then
  echo "CONFORMANCE GUEST: FAIL"
  echo "--- last console lines ---"
  vfsd_console_tail "$work/console.log" 15 '^[0-9.]* (CONF|VFSD-KMSG)'
  if ((sabotage)); then
    p0=${profiles[0]} p1=${profiles[1]} p2=${profiles[2]}
    dropped=$(head -n 1 "$work/$p0/expected-run.txt")
    want=$(printf '%s\n' "$p0:harness.$p0/run_ran:$dropped" "$p0:harness.$p0/run_complete" \
      "$p0:harness.$p0/run_summary" "$p1:guest/umount" "$p2:harness.$p2/daemon_exit" | sort)
    got=$(sed -n 's/^CONF \([^ ]*\) FAIL .*/\1/p' "$results" | sort)
    if [[ $got == "$want" ]] && grep -q "^CONF $p2:harness.$p2/daemon_exit FAIL expected=0 got=3$" "$results"; then
      echo "CONF SABOTAGE DETECTED: exactly the sabotaged checks failed"
    else
      echo "CONF SABOTAGE: unexpected set of failures; wanted:"
      sed 's/^/  /' <<<"$want"
    fi
  else
    keep=1
  fi
  exit 1
fi
echo "CONFORMANCE GUEST: PASS"
((sabotage)) && echo "CONF SABOTAGE NOT DETECTED: the harness passed a sabotaged run"
exit 0
