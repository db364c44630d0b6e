#!/usr/bin/env bash
# End-to-end test of live migration: a guest that appends to a file it holds
# open is migrated twice while it writes, between QEMU 10 instances whose
# virtio-fs daemons serve ONE shared folder.
#
#   run_migration_test.sh [--daemon=ours|rust] [--binary PATH]
#                         [--case=append|missing-file|unlinked]
#                         [--migration-mode=find-paths|file-handles]
#                         [--migration-on-error=abort|guest-error]
#                         [--sabotage] [--timeout SECONDS] [--keep] [--verbose]
#
# Three QEMU+daemon pairs a, b, c (QEMU 10 through scripts/qemu10, -accel
# tcg, the 6.12 guest, memory-backend-memfd share=on, a -qmp socket each;
# each daemon its own vhost-user socket, all on the same folder). QEMU a
# boots the guest (tests/e2e/guest/migration_checks.sh): it mounts the share,
# holds mig/f open (fd 3 appending, fd 4 reading) and appends numbered lines
# every 20 ms. Once it runs, b is started with -incoming defer, a is migrated
# to b over QMP (return-path on both sides, migrate-incoming, migrate, then
# query-migrate until completed or failed), a is told to quit and daemon a
# must exit by itself; after 20 more lines from the guest, b is migrated to
# c the same way. Then the host creates mig/stop: the
# guest stops, reads its file back through fd 4 (and by path), unmounts and
# powers off.
#
# Host checks: each migration completed and the destination runs; the
# source QEMU quit and its daemon exited 0 (so the lines the guest wrote
# afterwards were served by the destination: the host's file must hold every
# line the guest reported after each switch); the file holds exactly 1..N
# (N = the guest's last line: no gap, no duplicate), no NUL byte; the guest's
# own read back is exact; the last daemon exits 0 after poweroff; kernel and
# sanitizer checks. The host reads the file through a descriptor it opened
# before the guest started, so a renamed or unlinked file is still checked.
#
# Cases:
#   append        (default) the above.
#   missing-file  right before the first migration the host renames mig/f
#                 out of the share behind the daemons' backs (the guest's
#                 fds stay open; find-paths cannot find it). One migration:
#                 with --migration-on-error=abort (the default) it must FAIL
#                 and the guest go on on the source (its appends keep landing
#                 in the moved file); with guest-error it completes and the
#                 guest's next append must fail (EIO or similar).
#   unlinked      the guest removes mig/f after opening it; both migrations
#                 must keep its appends and reads working (file-handles).
# --migration-mode / --migration-on-error go to every daemon (each side
# ignores the one that is not its own); file-handles adds
# --modcaps=+dac_read_search (open_by_handle_at needs it). Environment:
# VFSD_DAEMON_ARGS (every daemon, either kind), VFSD_SRC_ARGS (the source
# side: a, and b as the second source), VFSD_DST_ARGS (b and c).
#
# --sabotage (case append): the source is stopped (QMP stop), the share is
# copied, and b and c serve the copy instead of the same folder; b is
# continued after the switch. The run must FAIL, and prints "E2E MIGRATION
# SABOTAGE DETECTED" when exactly the host's data checks failed
# (host_after_switch1, host_after_switch2, host_sequence).
#
# Needs QEMU 10 (scripts/fetch-qemu10.sh), the 6.12 guest kernel and
# python3 (QMP) and jq; with CI set, a missing piece fails instead of
# skipping.
# Exit status: 0 pass, 1 a check failed, 2 usage/setup error, 77 skipped.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

binary="$VFSD_ROOT/build/virtiofsd" daemon=ours sabotage=0 limit=300 keep=0
case=append migration_mode="" migration_on_error=""
vfsd_e2e_args 2,60 "daemon case migration-mode migration-on-error" "" "$@"
case $daemon in ours | rust) ;; *) echo "--daemon must be ours or rust" >&2; exit 2 ;; esac
case $case in append | missing-file | unlinked) ;; *) echo "--case must be append, missing-file or unlinked" >&2; exit 2 ;; esac
case $migration_mode in "" | find-paths | file-handles) ;; *) echo "--migration-mode must be find-paths or file-handles" >&2; exit 2 ;; esac
case $migration_on_error in "" | abort | guest-error) ;; *) echo "--migration-on-error must be abort or guest-error" >&2; exit 2 ;; esac
if ((sabotage)) && [[ $case != append ]]; then echo "--sabotage goes with --case=append" >&2; exit 2; fi
on_error=${migration_on_error:-abort}

export VFSD_KERNEL_ROOT=${VFSD_KERNEL_ROOT:-$VFSD_ROOT/.cache/kernel-6.12/root}
vfsd_kernel_image >/dev/null || vfsd_skip "no guest kernel in $VFSD_KERNEL_ROOT (scripts/install-deps.sh)"
qemu_version=$(vfsd_qemu10_version) || vfsd_skip "QEMU 10 is missing: $VFSD_QEMU10 --version fails (scripts/fetch-qemu10.sh)"
command -v python3 >/dev/null || vfsd_skip "python3 (the QMP client) is missing (scripts/install-deps.sh)"
command -v jq >/dev/null || vfsd_skip "jq is missing (scripts/install-deps.sh)"
if [[ $daemon == ours ]]; then
  vfsd_need_binary "$binary"
else
  vfsd_rust_command >/dev/null || vfsd_skip "the Rust virtiofsd is missing in $VFSD_RUST_DIR (scripts/fetch-rust-virtiofsd.sh)"
fi

vfsd_work_dir migration
# A command that fails outside a check ends the run (set -e): say where.
trap 'echo "run_migration_test.sh: line $LINENO: \"$BASH_COMMAND\" failed (status $?)" >&2' ERR
share=$work/share
mkdir -p "$share/mig"
: >"$share/mig/f"
echo "hello from the host" >"$share/hello.txt"
# The host's view of the guest's file, whatever happens to its name.
exec {hfd}<"$share/mig/f"
echo "mig_case=$case" >"$work/env.sh"
vfsd_build_initramfs "$work/initrd" "$HERE/guest/migration_checks.sh" "$work/env.sh:/guest/env.sh"

declare -A result detail dpid qbg qrc
order=()

# ---- daemons ------------------------------------------------------------------------
common=()
[[ -n $migration_mode ]] && common+=("--migration-mode=$migration_mode")
[[ $migration_mode == file-handles ]] && common+=(--modcaps=+dac_read_search)
[[ -n $migration_on_error ]] && common+=("--migration-on-error=$migration_on_error")
# shellcheck disable=SC2206
common+=(${VFSD_DAEMON_ARGS:-})
# shellcheck disable=SC2206
[[ $daemon == rust ]] && common+=(${VFSD_RUST_ARGS:-})
# Words of $@, each once (b gets both sides' arguments).
uniq_words() { printf '%s\n' "$@" | awk 'NF && !seen[$0]++' | tr '\n' ' '; }
# start_daemon NAME DIR ARGS...: daemon NAME on $work/NAME.sock, log daemon-NAME.log.
start_daemon() {
  local name=$1 dir=$2 args
  shift 2
  args=$(uniq_words "${common[@]}" "$@")
  if [[ $daemon == rust ]]; then
    VFSD_RUST_ARGS=$args vfsd_start_daemon rust "$work/$name.sock" "$dir" "$work/daemon-$name.log" || return 1
  else
    VFSD_DAEMON_ARGS=$args vfsd_start_daemon ours "$work/$name.sock" "$dir" "$work/daemon-$name.log" "$binary" || return 1
  fi
  dpid[$name]=$VFSD_DAEMON_PID
  VFSD_DAEMON_PID="" # this script ends them (vfsd_e2e_cleanup)
}
# shellcheck disable=SC2206
src_args=(${VFSD_SRC_ARGS:-}) dst_args=(${VFSD_DST_ARGS:-})
# daemon_exit NAME SECONDS: waits for daemon NAME to exit by itself; sets
# dexit to its status, or "running" (then it is killed). Not in a subshell:
# only this shell can wait for its children.
daemon_exit() {
  local pid=${dpid[$1]}
  dexit=0
  if ! vfsd_wait_for "$2" bash -c "! kill -0 $pid 2>/dev/null"; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    dexit=running
  else
    wait "$pid" 2>/dev/null || dexit=$?
  fi
  dpid[$1]=""
}

# ---- QEMUs ----------------------------------------------------------------------------
# start_qemu NAME [incoming]: QEMU NAME (same device set, its daemon's
# socket, QMP on $work/NAME.qmp) in the background; console-NAME.log.
start_qemu() {
  local name=$1 qargs="-qmp unix:$work/$1.qmp,server=on,wait=off"
  [[ ${2:-} == incoming ]] && qargs+=" -incoming defer"
  VFSD_QEMU=$VFSD_QEMU10 VFSD_QEMU_ARGS=$qargs VFSD_DAEMON_PIDS=${dpid[$name]} \
    vfsd_boot_guest "$work/$name.sock" "$work/initrd" "$work/console-$name.log" "$limit" &
  qbg[$name]=$!
}
# wait_qemu NAME SECONDS: waits for QEMU NAME's end; sets qrc[NAME] (its
# exit status, or "running" if it is still there, then it is killed).
wait_qemu() {
  local name=$1 bg=${qbg[$1]:-} st=0
  [[ -n $bg ]] || return 0
  if ! vfsd_wait_for "$2" bash -c "! kill -0 $bg 2>/dev/null"; then
    kill_qemu "$name"
    qrc[$name]=running
  else
    wait "$bg" 2>/dev/null || st=$?
    qrc[$name]=$st
  fi
  qbg[$name]=""
}
# kill_qemu NAME: ends QEMU NAME (SIGTERM, which it handles; SIGKILL 10 s later).
kill_qemu() {
  local pidfile=$work/console-$1.log.qemu-pid pid
  if [[ -s $pidfile ]]; then
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    vfsd_wait_for 10 bash -c "! kill -0 $pid 2>/dev/null" || kill -9 "$pid" 2>/dev/null || true
  fi
  if [[ -n ${qbg[$1]:-} ]]; then wait "${qbg[$1]}" 2>/dev/null || true; fi
}
vfsd_e2e_cleanup() {
  local n
  for n in a b c; do [[ -n ${qbg[$n]:-} ]] && kill_qemu "$n"; done
  for n in a b c; do [[ -n ${dpid[$n]:-} ]] && kill "${dpid[$n]}" 2>/dev/null; done
  return 0
}
qmp() { vfsd_qmp "$work/$1.qmp" "${@:2}"; }

# ---- what the guest and the host see ----------------------------------------------------
# (Pipelines run with pipefail: consoles succeeds whichever logs exist, and
# the first line of a pipeline's output is taken with awk, which reads it
# all, never with head, whose early exit would fail the writer.)
consoles() {
  local n
  for n in a b c; do
    if [[ -f $work/console-$n.log ]]; then cat "$work/console-$n.log"; fi
  done
  return 0
}
first() { awk 'NR == 1'; }
# The guest's highest reported line (E2E-MIG-PROGRESS n=N), 0 before any.
guest_n() {
  { consoles | sed -n 's/^[0-9.]* E2E-MIG-PROGRESS n=\([0-9]*\).*/\1/p'; echo 0; } | sort -n | tail -n 1
}
guest_at_least() { (($(guest_n) >= $1)); }
guest_said() { consoles | grep "^[0-9.]* $1" >/dev/null; }
# Lines in the guest's file on the host (through the descriptor opened before boot).
host_lines() { wc -l <"/proc/$$/fd/$hfd" 2>/dev/null || echo -1; }
# wait_lines NAME: waits for 20 more lines from the guest (bounded), then
# records NAME: the host's file must hold every line the guest reported.
wait_lines() {
  local name=$1 what=$2 want n h
  want=$(($(guest_n) + 20))
  if ! vfsd_wait_for 60 guest_at_least "$want"; then
    vfsd_record "$name" FAIL "the guest did not report line $want within 60 s ($what; it reported $(guest_n))"
    return 1
  fi
  n=$(guest_n) h=$(host_lines)
  if ((h >= n)); then
    vfsd_record "$name" PASS "guest reported line $n $what, the host's file has $h lines"
  else
    vfsd_record "$name" FAIL "guest reported line $n $what, the host's file has only $h lines"
  fi
}

# migrate FROM TO N: migrates QEMU FROM into QEMU TO (-incoming defer) over
# $work/migN.sock, with the return path on (as libvirt does: without it the
# source reports "completed" as soon as it has sent everything, even when
# the destination then fails to load the state, and stays paused); returns
# 0 when it completed. mig_status[N]: completed, failed, refused (the
# migrate command was rejected), error (the destination did not listen).
migrate() {
  local from=$1 to=$2 n=$3 uri="unix:$work/mig$3.sock" out st err t0
  local caps='{"capabilities": [{"capability": "return-path", "state": true}]}'
  t0=$EPOCHREALTIME
  if ! qmp "$to" migrate-set-capabilities "$caps" >/dev/null 2>"$work/qmp.err" ||
    ! qmp "$to" migrate-incoming "{\"uri\": \"$uri\"}" >/dev/null 2>>"$work/qmp.err"; then
    mig_status[n]=error mig_error[n]="destination $to: $(cat "$work/qmp.err")"
  elif ! qmp "$from" migrate-set-capabilities "$caps" >/dev/null 2>"$work/qmp.err" ||
    ! qmp "$from" migrate-set-parameters '{"max-bandwidth": 1073741824}' >/dev/null 2>>"$work/qmp.err" ||
    ! qmp "$from" migrate "{\"uri\": \"$uri\"}" >/dev/null 2>>"$work/qmp.err"; then
    mig_status[n]=refused mig_error[n]="source $from: $(cat "$work/qmp.err")"
  else
    out=$(qmp "$from" --wait-migration 120 2>"$work/qmp.err") || true
    st=$(jq -r '.status // "?"' <<<"$out" 2>/dev/null || echo "?")
    err=$(jq -r '."error-desc" // ""' <<<"$out" 2>/dev/null || true)
    [[ -n $out ]] || err="query-migrate: $(cat "$work/qmp.err")"
    mig_status[n]=$st mig_error[n]=$err
  fi
  mig_time[n]=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
  # The count at the switch: the host's lines and the guest's last report.
  mig_at[n]="host file $(host_lines) lines, guest at line $(guest_n)"
  echo "   migration $n ($from -> $to): ${mig_status[n]} in ${mig_time[n]}s (${mig_at[n]}) ${mig_error[n]}"
  [[ ${mig_status[n]} == completed ]]
}
declare -a mig_status=() mig_error=() mig_time=() mig_at=()
record_migration() { # N EXPECTED(completed|failed)
  local n=$1 want=$2 d="status ${mig_status[$1]:-not run} in ${mig_time[$1]:-?}s, ${mig_at[$1]:-}${mig_error[$1]:+: ${mig_error[$1]}}"
  if [[ ${mig_status[n]:-} == "$want" || ($want == failed && ${mig_status[n]:-} == refused) ]]; then
    vfsd_record "migration$n" PASS "$d"
  else
    vfsd_record "migration$n" FAIL "$d (expected $want)"
  fi
}
# switched FROM TO N: after migration N completed: the destination must
# run (guest_on=TO, else ""), the source quit when asked, and its daemon
# exit by itself with status 0.
switched() {
  local from=$1 to=$2 n=$3 out st
  ((sabotage)) && qmp "$to" cont >/dev/null 2>&1
  out=$(qmp "$to" --wait-status running 30 2>&1) && st=PASS || st=FAIL
  vfsd_record "dst${n}_running" "$st" "$to: $out"
  if [[ $st == PASS ]]; then guest_on=$to; else guest_on=""; fi
  qmp "$from" quit >/dev/null 2>&1 || true
  wait_qemu "$from" 60
  vfsd_check "src${n}_qemu_quit" "QEMU $from: status ${qrc[$from]} after quit" test "${qrc[$from]}" = 0
  daemon_exit "$from" 30
  vfsd_check "src${n}_daemon_exit" "daemon $from: '$dexit' 30 s after its QEMU quit, not 0" test "$dexit" = 0
}
# not_switched FROM TO N: after migration N did not complete: the
# destination QEMU ends (it is ended if the migration never started) and so
# does its daemon; the source must run on (guest_on=FROM, else "").
not_switched() {
  local from=$1 to=$2 n=$3 out st
  if [[ ${mig_status[n]} == failed ]]; then
    wait_qemu "$to" 60
    vfsd_check "dst${n}_qemu_gone" "the destination QEMU $to is '${qrc[$to]}' 60 s after the failed migration" \
      test "${qrc[$to]}" != running
  else
    kill_qemu "$to"
    qbg[$to]=""
  fi
  daemon_exit "$to" 30
  vfsd_check "dst${n}_daemon_gone" "daemon $to is '$dexit' 30 s after its QEMU ended" test "$dexit" != running
  out=$(qmp "$from" --wait-status running 30 2>&1) && st=PASS || st=FAIL
  vfsd_record "src${n}_still_running" "$st" "$from: $out"
  if [[ $st == PASS ]]; then guest_on=$from; else guest_on=""; fi
}

# ---- the run ------------------------------------------------------------------------------
title="e2e migration ($daemon, case $case, ${migration_mode:-find-paths}, on error $on_error; QEMU $qemu_version)"
if ((sabotage)); then echo "== $title (SABOTAGE: the destinations serve a copy of the share: must FAIL)"; else echo "== $title"; fi
dst_share=$share
start_daemon a "$share" "${src_args[@]}" || exit 1
t0=$EPOCHREALTIME
start_qemu a
guest_on="" # the QEMU the guest runs on; "" when it is lost
if vfsd_wait_for "$limit" guest_said E2E-MIG-RUNNING && vfsd_wait_for 60 guest_at_least 20; then
  vfsd_record guest_running PASS "appending (line $(guest_n))"
  guest_on=a
else
  vfsd_record guest_running FAIL "the guest never printed E2E-MIG-RUNNING and line 20"
fi

# ---- migration 1: a -> b -----------------------------------------------------------------
if [[ $guest_on == a ]]; then
  if ((sabotage)); then
    # The source stands still while its share is copied: the copy is what
    # the destinations serve (same names, the content of that moment).
    qmp a stop >/dev/null
    dst_share=$work/share-copy
    cp -a "$share" "$dst_share"
  fi
  if [[ $case == missing-file ]]; then
    mv "$share/mig/f" "$work/moved-f"
    vfsd_record host_renamed PASS "mig/f moved out of the share to $work/moved-f at guest line $(guest_n)"
  fi
  if start_daemon b "$dst_share" "${src_args[@]}" "${dst_args[@]}"; then
    start_qemu b incoming
    if [[ $case == missing-file && $on_error == abort ]]; then want1=failed; else want1=completed; fi
    if migrate a b 1; then
      record_migration 1 "$want1"
      switched a b 1
    else
      record_migration 1 "$want1"
      not_switched a b 1
      # abort: the guest goes on on the source, its appends keep landing.
      [[ $want1 == failed && $guest_on == a ]] && { wait_lines appended_on_source "after the failed migration (on a)" || true; }
    fi
  else
    vfsd_record daemon_b FAIL "daemon b did not start"
  fi
fi

# guest-error: the guest's next append through fd 3 must fail.
if [[ $case == missing-file && $on_error == guest-error && $guest_on == b ]]; then
  if vfsd_wait_for 120 guest_said E2E-MIG-WRITE-ERROR; then
    vfsd_record guest_sees_error PASS "$(consoles | sed -n 's/^[0-9.]* E2E-MIG-WRITE-ERROR //p' | first)"
  else
    vfsd_record guest_sees_error FAIL "no failed append within 120 s after the switch (line $(guest_n))"
  fi
fi

# ---- migration 2: b -> c -------------------------------------------------------------------
if [[ $case != missing-file && $guest_on == b ]]; then
  wait_lines host_after_switch1 "after the switch to b (a gone)" || true
  if start_daemon c "$dst_share" "${dst_args[@]}"; then
    start_qemu c incoming
    if migrate b c 2; then
      record_migration 2 completed
      switched b c 2
      [[ $guest_on == c ]] && { wait_lines host_after_switch2 "after the switch to c (b gone)" || true; }
    else
      record_migration 2 completed
      not_switched b c 2
    fi
  else
    vfsd_record daemon_c FAIL "daemon c did not start"
  fi
fi

# ---- the end: stop, the guest checks and powers off --------------------------------------
touch "$share/mig/stop"
[[ $dst_share != "$share" ]] && touch "$dst_share/mig/stop"
if [[ -n $guest_on ]]; then
  wait_qemu "$guest_on" "$limit"
  vfsd_check guest_finished "QEMU $guest_on (the guest's last host): status ${qrc[$guest_on]}, not 0 (powered off by itself)" \
    test "${qrc[$guest_on]}" = 0
  daemon_exit "$guest_on" 30
  vfsd_check "daemon_${guest_on}_exit" "daemon $guest_on (the last): '$dexit' 30 s after its QEMU ended, not 0" \
    test "$dexit" = 0
else
  vfsd_record guest_finished FAIL "the guest runs on no QEMU (lost before or in a migration): not waited for"
fi
t_done=$EPOCHREALTIME
# Whatever is left (a failed run) is ended by vfsd_e2e_cleanup.

while read -r _ name res rest; do vfsd_record "$name" "$res" "$rest"; done \
  < <(consoles | sed -n 's/^[0-9.]* \(E2E [a-z_0-9]* \(PASS\|FAIL\).*\)$/\1/p')
for n in mount open; do
  [[ -v "result[$n]" ]] || vfsd_record "$n" FAIL "marker missing from the guest's console"
done
if [[ $case == unlinked && ! -v "result[unlink]" ]]; then vfsd_record unlink FAIL "marker missing from the guest's console"; fi
last_n=$(consoles | sed -n 's/^[0-9.]* E2E-MIG-STOPPED last=\([0-9]*\).*/\1/p' | tail -n 1)
vfsd_check guest_stopped "the guest did not report its last line (E2E-MIG-STOPPED) or wrote none: '$last_n'" \
  test -n "$last_n" -a "${last_n:-0}" -gt 0
last_n=${last_n:-0}
werr=$(consoles | sed -n 's/^[0-9.]* E2E-MIG-WRITE-ERROR //p' | first)
# readback VIA WANT: the guest's read back through fd 4 or by path.
readback() {
  local line
  line=$(consoles | sed -n "s/^[0-9.]* E2E-MIG-READBACK via=$1 //p" | tail -n 1)
  if [[ -z $line ]]; then
    vfsd_record "guest_readback_$1" FAIL "no E2E-MIG-READBACK via=$1 from the guest"
  elif [[ $line == "status=$2"* ]]; then
    vfsd_record "guest_readback_$1" PASS "$line"
  else
    vfsd_record "guest_readback_$1" FAIL "$line (expected status=$2)"
  fi
}
if [[ $case == missing-file && $on_error == guest-error ]]; then
  readback fd4 error
else
  vfsd_check guest_no_write_error "an append failed: $werr" test -z "$werr"
  readback fd4 ok
  [[ $case == append ]] && readback path ok
fi

# The host's file: exactly 1..N, N = the guest's last line.
host_copy=$work/host-f
cat "/proc/$$/fd/$hfd" >"$host_copy" 2>/dev/null || : >"$host_copy"
nul=$(tr -cd '\000' <"$host_copy" | wc -c)
vfsd_check host_no_nul "$nul NUL bytes in the guest's file on the host" test "$nul" = 0
seq 1 "$last_n" >"$work/want"
if cmp -s "$host_copy" "$work/want"; then
  vfsd_record host_sequence PASS "lines 1..$last_n, each once, in order"
else
  vfsd_record host_sequence FAIL "not exactly 1..$last_n: $(wc -l <"$host_copy") lines, last '$(tail -n 1 "$host_copy" | tr -d '\000' | cut -c 1-40)', first difference: $(cmp "$host_copy" "$work/want" 2>&1 | first)"
fi

while read -r name res rest; do vfsd_record "$name" "$res" "$rest"; done \
  < <(consoles >"$work/console-all.log"; vfsd_kernel_checks "$work/console-all.log" 1)
sanitizer=$(cat "$work"/daemon-*.log | vfsd_sanitizer_reports /dev/stdin || true)
vfsd_check daemon_sanitizers "sanitizer reports: $(first <<<"$sanitizer")" test -z "$sanitizer"
elapsed=$(awk -v a="$t0" -v b="$t_done" 'BEGIN{printf "%.1f", b-a}')

# ---- report -----------------------------------------------------------------------------
vfsd_report_checks 26
echo "   (guest ${elapsed}s, ${last_n} lines; ${#order[@]} checks)"
qemu_msgs=$(consoles | sed -n 's/^[0-9.]* \(qemu-system-x86_64: .*\)$/\1/p' | sort -u | awk 'NR <= 20')
if [[ -n $qemu_msgs ]]; then
  echo "--- QEMU's messages ---"
  echo "$qemu_msgs"
fi
if ((${#failed[@]})); then
  echo "E2E RESULT: FAIL (${#failed[@]} failed: ${failed[*]})"
  for n in a b c; do
    [[ -s $work/console-$n.log ]] || continue
    echo "--- last console lines of QEMU $n ---"
    vfsd_console_tail "$work/console-$n.log" 10 '^[0-9.]* (E2E|VFSD-KMSG)'
  done
  for n in a b c; do
    [[ -s $work/daemon-$n.log ]] || continue
    echo "--- daemon $n log (last 15 lines) ---"
    tail -n 15 "$work/daemon-$n.log"
  done
  if ((sabotage)); then
    need="host_after_switch1 host_after_switch2 host_sequence"
    if [[ "$(printf '%s\n' "${failed[@]}" | sort | tr '\n' ' ')" == "$(tr ' ' '\n' <<<"$need" | sort | tr '\n' ' ')" ]]; then
      echo "E2E MIGRATION SABOTAGE DETECTED: exactly the host's data checks failed"
    else
      echo "E2E MIGRATION SABOTAGE: unexpected set of failures"
      keep=1
    fi
  fi
  ((sabotage)) || keep=1
  exit 1
fi
echo "E2E RESULT: PASS"
((sabotage)) && echo "E2E MIGRATION SABOTAGE NOT DETECTED: the harness passed a sabotaged run"
exit 0
