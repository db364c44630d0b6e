#!/usr/bin/env bash
# The unprivileged run with id translation, in a real guest: our daemon
# started as nobody (65534) with --translate-uid/--translate-gid squashing
# every guest id onto its own and showing its own as e2euser's (1234:2345).
# The guest (tests/e2e/guest/idmap_guest.sh) checks what it sees and does;
# after poweroff the host checks with stat what was stored.
#
#   run_idmap_test.sh --sandbox=none|namespace [--binary PATH] [--timeout S]
#                     [--sabotage] [--keep] [--verbose]
#
#   none       the daemon's ids are nobody's: squash-guest:0:65534:65536
#   namespace  its user namespace maps 0 to nobody: squash-guest:0:0:65536
#   --sabotage the daemon gets no --translate-* options: the run must FAIL,
#              and prints "IDMAP SABOTAGE DETECTED" when exactly the checks
#              that need the translation failed (the guest sees nobody's ids,
#              e2euser cannot create, root's file and chown are nobody's)
#
# Exit status: 0 passed, 1 a check failed, 2 usage or set-up error.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

mode="" binary="$VFSD_ROOT/build/virtiofsd" limit=240 keep=0 sabotage=0
vfsd_e2e_args 2,19 "sandbox:mode" "" "$@"
[[ $mode == none || $mode == namespace ]] || { echo "--sandbox=none|namespace is required" >&2; exit 2; }
vfsd_need_binary "$binary"
vfsd_kernel_image >/dev/null || vfsd_skip "no guest kernel (run scripts/install-deps.sh)"
command -v setpriv >/dev/null || vfsd_skip "setpriv (util-linux) is missing"
((EUID == 0)) || vfsd_skip "needs root to start the daemon as another user"

nobody=65534
vfsd_work_dir idmap
chmod 0755 "$work"
share=$work/share sockdir=$work/sock
mkdir -p "$share" "$sockdir"
chown "$nobody:$nobody" "$share" "$sockdir"
echo host >"$share/hostfile"
chown "$nobody:$nobody" "$share/hostfile"

if [[ $mode == none ]]; then own=$nobody; else own=0; fi
args=("--sandbox=$mode"
  "--translate-uid=squash-guest:0:$own:65536" "--translate-uid=host:$own:1234:1"
  "--translate-uid=forbid-guest:70000:1"
  "--translate-gid=squash-guest:0:$own:65536" "--translate-gid=host:$own:2345:1")
if ((sabotage)); then
  args=("--sandbox=$mode")
  echo "== id translation, unprivileged daemon, --sandbox=$mode (SABOTAGE run: no translation, must FAIL)"
else
  echo "== id translation, unprivileged daemon, --sandbox=$mode"
fi

vfsd_build_initramfs "$work/initrd" "$HERE/guest/idmap_guest.sh" >/dev/null
sock=$sockdir/vhost.sock
VFSD_DAEMON_PREFIX="setpriv --reuid=$nobody --regid=$nobody --clear-groups --" \
  VFSD_DAEMON_ARGS="${args[*]}" \
  vfsd_start_daemon ours "$sock" "$share" "$work/daemon.log" "$binary" || exit 2

qemu_rc=0
vfsd_boot_guest "$sock" "$work/initrd" "$work/console.log" "$limit" || qemu_rc=$?
daemon_rc=0
vfsd_stop_daemon 30 || daemon_rc=timeout
[[ $daemon_rc == 0 ]] && daemon_rc=${VFSD_DAEMON_EXIT:-0}

results=$(vfsd_console_lines "$work/console.log" 'IDMAP ' | sed 's/^IDMAP //')
host_owner() { stat -c '%u:%g' "$1" 2>&1; }
h="$(host_owner "$share/userfile") $(host_owner "$share/userdir") $(host_owner "$share/rootfile")"
want="$nobody:$nobody $nobody:$nobody $nobody:$nobody"
if [[ $h == "$want" && $(cat "$share/userfile" 2>/dev/null) == user ]]; then
  results+=$'\n'"host_owner_is_the_daemons PASS"
else
  results+=$'\n'"host_owner_is_the_daemons FAIL $h"
fi
((qemu_rc == 0)) && results+=$'\n'"guest_finished PASS" || results+=$'\n'"guest_finished FAIL qemu status $qemu_rc"
[[ $daemon_rc == 0 ]] && results+=$'\n'"daemon_exit PASS" || results+=$'\n'"daemon_exit FAIL $daemon_rc"
results+=$'\n'"$(vfsd_kernel_checks "$work/console.log" 1)"

failed=0 failures=""
for check in mount host_owner_seen_as_guest user_creates root_creates forbidden_chown \
  chown_to_guest_owner umount host_owner_is_the_daemons guest_finished daemon_exit \
  kernel_console_clean kernel_log_clean; do
  line=$(grep -E "^$check (PASS|FAIL)" <<<"$results" | head -n 1 || true)
  if [[ -z $line ]]; then
    echo "  $check MISSING"
    failed=1
  else
    echo "  $line"
    [[ $line == "$check PASS"* ]] || { failed=1; failures+=" $check"; }
  fi
done
if ((sabotage)); then
  # Without translation the daemon shows nobody's ids, cannot become guest
  # users, and root's chowns are its own to refuse.
  expected=" host_owner_seen_as_guest user_creates root_creates chown_to_guest_owner"
  expected+=" host_owner_is_the_daemons"
  if [[ $failures == "$expected" ]]; then echo "IDMAP SABOTAGE DETECTED"; exit 1; fi
  echo "sabotage run: failed checks were '$failures', expected '$expected'"
fi
if ((failed)); then
  keep=1
  echo "FAILED; daemon log:"
  sed 's/^/  | /' "$work/daemon.log"
  echo "last console lines:"
  tail -n 30 "$work/console.log" | sed 's/^/  | /'
  exit 1
fi
echo "PASSED"
