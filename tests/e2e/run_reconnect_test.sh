#!/usr/bin/env bash
# End-to-end test of --reconnect: our daemon outlives a VMM killed with
# SIGKILL and serves a new one on the same socket.
#
#   run_reconnect_test.sh [--binary PATH] [--sabotage] [--timeout SECONDS]
#                         [--keep] [--verbose]
#
# 1. The daemon starts with --reconnect (plus VFSD_DAEMON_ARGS).
# 2. Guest 1 mounts, writes 4 MiB with fsync, holds files open, prints
#    E2E-RECONNECT-WRITTEN; the host then kills its QEMU with SIGKILL (no
#    unmount, no FUSE DESTROY, the vhost-user socket just closes).
# 3. The daemon must still run and wait for the next frontend.
# 4. Guest 2, a new QEMU on the same socket, mounts (a fresh FUSE session)
#    and must read guest 1's bytes (same sha256 as guest 1 wrote and as the
#    host reads), write a file of its own, unmount and power off.
# 5. The daemon must still run after guest 2 and exit with status 0 on
#    SIGTERM.
#
# --sabotage starts the daemon without --reconnect: it then exits when guest 1
# dies and guest 2 cannot connect; the run must FAIL, and prints
# "E2E RECONNECT SABOTAGE DETECTED" when exactly the checks that need
# --reconnect failed.
#
# Exit status: 0 pass, 1 a check failed, 2 usage/setup error.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

binary="$VFSD_ROOT/build/virtiofsd" sabotage=0 limit=240 keep=0
vfsd_e2e_args 2,24 "" "" "$@"
vfsd_need_binary "$binary"
vfsd_need_guest

vfsd_work_dir reconnect
share=$work/share
mkdir -p "$share/reconnect"
guest1_bg=""
vfsd_e2e_cleanup() { # guest 1's QEMU, if the run ends before it was killed
  if [[ -n $guest1_bg ]]; then kill "$guest1_bg" 2>/dev/null || true; fi
  if [[ -s $work/console1.log.qemu-pid ]]; then kill -9 "$(cat "$work/console1.log.qemu-pid")" 2>/dev/null || true; fi
}

echo "hello from the host" >"$share/hello.txt"
echo 1 >"$share/reconnect/phase"
vfsd_build_initramfs "$work/initrd" "$HERE/guest/reconnect_checks.sh"

declare -A result detail
order=()
# Guest markers of console log $1, names suffixed with $2.
collect() {
  local name res rest
  while read -r _ name res rest; do vfsd_record "$name$2" "$res" "$rest"; done \
    < <(vfsd_console_lines "$1" 'E2E [a-z_0-9]* \(PASS\|FAIL\)')
}
waits() { grep -c 'Waiting for vhost-user socket connection' "$work/daemon.log" || true; }
daemon_alive() { kill -0 "$VFSD_DAEMON_PID" 2>/dev/null; }

args="--reconnect"
((sabotage)) && args=""
if ((sabotage)); then echo "== e2e reconnect (SABOTAGE run without --reconnect: must FAIL)"; else echo "== e2e reconnect"; fi
VFSD_DAEMON_ARGS="$args ${VFSD_DAEMON_ARGS:-}" \
  vfsd_start_daemon ours "$work/vhost.sock" "$share" "$work/daemon.log" "$binary" || exit 1
t0=$EPOCHREALTIME

# ---- guest 1, killed with SIGKILL once its data is on the host ---------------
rc1=0
vfsd_boot_guest "$work/vhost.sock" "$work/initrd" "$work/console1.log" "$limit" &
guest1_bg=$!
if vfsd_wait_for "$limit" grep -q 'E2E-RECONNECT-WRITTEN' "$work/console1.log"; then
  qpid=$(cat "$work/console1.log.qemu-pid" 2>/dev/null || true)
  if [[ -n $qpid ]] && kill -9 "$qpid"; then
    vfsd_record guest1_sigkilled PASS "QEMU pid $qpid"
  else
    vfsd_record guest1_sigkilled FAIL "no QEMU pid to kill"
  fi
else
  vfsd_record guest1_sigkilled FAIL "guest 1 never printed E2E-RECONNECT-WRITTEN"
fi
wait "$guest1_bg" || rc1=$?
guest1_bg=""
t_killed=$EPOCHREALTIME
collect "$work/console1.log" ""
vfsd_check guest1_qemu_status "QEMU 1 exited with $rc1, not by SIGKILL (137)" test "$rc1" = 137

# ---- the daemon between the two VMMs ---------------------------------------------
vfsd_wait_for 30 bash -c "(( \$(grep -c 'Waiting for vhost-user socket connection' '$work/daemon.log') >= 2 ))" || true
vfsd_check daemon_survived_kill "the daemon is gone after QEMU 1 was killed (or did not wait again: $(waits) waits)" \
  bash -c "kill -0 $VFSD_DAEMON_PID 2>/dev/null && (( \$(grep -c 'Waiting for vhost-user socket connection' '$work/daemon.log') >= 2 ))"
host_sha=$(sha256sum "$share/reconnect/data" 2>/dev/null | cut -d' ' -f1 || true)
g1_sha=$(sed -n 's/.*sha256=\([0-9a-f]*\).*/\1/p' <<<"${detail[guest1_write]:-}")
vfsd_check host_sha_after_kill "host sha256 '$host_sha', guest 1 wrote '$g1_sha'" \
  test -n "$g1_sha" -a "$host_sha" = "$g1_sha"

# ---- guest 2: a new QEMU on the same socket ---------------------------------------
echo 2 >"$share/reconnect/phase"
rc2=0
vfsd_boot_guest "$work/vhost.sock" "$work/initrd" "$work/console2.log" "$limit" || rc2=$?
t_done=$EPOCHREALTIME
collect "$work/console2.log" 2
for n in mount2 guest2_read2 guest2_tree2 guest2_umount2; do
  [[ -v "result[$n]" ]] || vfsd_record "$n" FAIL "marker missing from guest 2's console"
done
for n in mount guest1_write; do
  [[ -v "result[$n]" ]] || vfsd_record "$n" FAIL "marker missing from guest 1's console"
done
vfsd_check guest2_finished "QEMU 2 exited with status $rc2" test "$rc2" = 0
g2_sha=$(sed -n 's/.*sha256=\([0-9a-f]*\).*/\1/p' <<<"${detail[guest2_read2]:-}")
vfsd_check guest2_sees_guest1_bytes "guest 2 read sha256 '$g2_sha', guest 1 wrote '$g1_sha'" \
  test -n "$g1_sha" -a "$g2_sha" = "$g1_sha"
vfsd_check host_guest2_file "reconnect/from-guest2 on the host: '$(cat "$share/reconnect/from-guest2" 2>&1)'" \
  test "$(cat "$share/reconnect/from-guest2" 2>/dev/null)" = "written by guest 2"
for c in 1 2; do
  while read -r name res rest; do vfsd_record "$name$c" "$res" "$rest"; done \
    < <(vfsd_kernel_checks "$work/console$c.log" 1)
done

# ---- the daemon after guest 2, then SIGTERM -----------------------------------------
vfsd_wait_for 30 bash -c "(( \$(grep -c 'Waiting for vhost-user socket connection' '$work/daemon.log') >= 3 ))" || true
vfsd_check daemon_alive_after_guest2 "the daemon is gone after guest 2 (or did not wait again: $(waits) waits)" \
  bash -c "kill -0 $VFSD_DAEMON_PID 2>/dev/null && (( \$(grep -c 'Waiting for vhost-user socket connection' '$work/daemon.log') >= 3 ))"
term_status=""
if daemon_alive; then
  kill -TERM "$VFSD_DAEMON_PID"
  # Bounded: a daemon that ignores SIGTERM is killed 10 s later (status 137).
  (sleep 10 && kill -9 "$VFSD_DAEMON_PID" 2>/dev/null) &
  killer=$!
  term_status=0
  wait "$VFSD_DAEMON_PID" 2>/dev/null || term_status=$?
  kill "$killer" 2>/dev/null || true
  wait "$killer" 2>/dev/null || true
fi
VFSD_DAEMON_PID=""
vfsd_check daemon_sigterm_exit "after SIGTERM the daemon's status is '${term_status:-gone before}', not 0" \
  test "$term_status" = 0
sanitizer=$(vfsd_sanitizer_reports "$work/daemon.log" || true)
vfsd_check daemon_sanitizers "sanitizer reports: $(head -n 1 <<<"$sanitizer")" test -z "$sanitizer"
elapsed=$(awk -v a="$t0" -v b="$t_done" 'BEGIN{printf "%.1f", b-a}')
gap=$(awk -v a="$t_killed" -v b="$t_done" 'BEGIN{printf "%.1f", b-a}')

# ---- report -----------------------------------------------------------------------------
vfsd_report_checks 26
echo "   (both guests ${elapsed}s, guest 2 after the kill ${gap}s; ${#order[@]} checks)"
if ((${#failed[@]})); then
  echo "E2E RESULT: FAIL (${#failed[@]} failed: ${failed[*]})"
  for c in 1 2; do
    echo "--- last console lines of guest $c ---"
    vfsd_console_tail "$work/console$c.log" 15 '^[0-9.]* (E2E|VFSD-KMSG)'
  done
  echo "--- daemon log (last 25 lines) ---"
  tail -n 25 "$work/daemon.log"
  if ((sabotage)); then
    # Without --reconnect the daemon exits 0 when guest 1 dies; guest 2 then
    # finds no socket to connect to.
    need="daemon_survived_kill guest2_finished mount2 guest2_read2 guest2_tree2 guest2_umount2 guest2_sees_guest1_bytes host_guest2_file kernel_log_clean2 daemon_alive_after_guest2 daemon_sigterm_exit"
    if [[ "$(printf '%s\n' "${failed[@]}" | sort | tr '\n' ' ')" == "$(tr ' ' '\n' <<<"$need" | sort | tr '\n' ' ')" ]]; then
      echo "E2E RECONNECT SABOTAGE DETECTED: exactly the checks that need --reconnect failed"
    else
      echo "E2E RECONNECT SABOTAGE: unexpected set of failures"
    fi
  fi
  ((sabotage)) || keep=1
  exit 1
fi
echo "E2E RESULT: PASS"
((sabotage)) && echo "E2E RECONNECT SABOTAGE NOT DETECTED: the harness passed a sabotaged run"
exit 0
