#!/usr/bin/env bash
# End-to-end test: a real Linux guest (QEMU, TCG) mounts a host folder served
# by a virtio-fs daemon and does everyday file work on it; the host checks the
# results after the guest has powered off.
#
#   run_guest_test.sh --daemon=ours|c|rust [--binary PATH] [--sabotage]
#                     [--timeout SECONDS] [--keep] [--verbose]
#
#   --daemon=ours   our virtiofsd (--binary, default build/virtiofsd)
#   --daemon=c      QEMU 7.2's C virtiofsd (/usr/lib/qemu/virtiofsd); exit 77
#                   (skip) if it is not installed
#   --daemon=rust   the Rust virtiofsd from scripts/fetch-rust-virtiofsd.sh
#   --sabotage      proves the harness can fail: one guest-side expectation is
#                   falsified, the guest-written 64 MiB file is corrupted on
#                   the host after poweroff, and the guest writes a kernel
#                   warning (KERN_WARNING) and a BUG line (KERN_INFO) into its
#                   kernel log. The run must then FAIL; it prints
#                   "E2E SABOTAGE DETECTED" when exactly those checks failed.
#
# Exit status: 0 all checks passed, 1 a check failed or a marker is missing,
# 2 usage/setup error, 77 skipped (a missing peer daemon; with CI set, a skip
# is a failure instead, exit 1).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

daemon="" binary="$VFSD_ROOT/build/virtiofsd" sabotage=0 limit=360 keep=0
vfsd_e2e_args 2,24 daemon "" "$@"
case $daemon in
  ours) vfsd_need_binary "$binary" ;;
  c) [[ -x $VFSD_C_DAEMON ]] || vfsd_skip "$VFSD_C_DAEMON is not installed (scripts/install-deps.sh)" ;;
  rust) vfsd_rust_command >/dev/null || vfsd_skip "Rust virtiofsd not fetched (scripts/install-deps.sh)" ;;
  *) echo "usage: $0 --daemon=ours|c|rust [--binary PATH] [--sabotage]" >&2; exit 2 ;;
esac
vfsd_need_guest

vfsd_work_dir e2e
share=$work/share
mkdir -p "$share"

# ---- the shared folder, as the host prepares it ------------------------------
echo "hello from the host" >"$share/hello.txt"
mkdir "$share/subdir"
echo "nested file" >"$share/subdir/nested.txt"
head -c $((3 * 1024 * 1024 + 12345)) /dev/urandom >"$share/hostfile.bin"
hostfile_sha=$(sha256sum "$share/hostfile.bin" | cut -d' ' -f1)
# 2000 entries whose names vary in length (1..~120 bytes), so directory
# replies end at every possible offset inside a buffer.
mkdir "$share/many"
pad=$(printf 'x%.0s' {1..120})
for ((i = 0; i < 2000; i++)); do
  : >"$share/many/e$i-${pad:0:$(((i * 37) % 115))}"
done
many_sha=$(ls -1 "$share/many" | LC_ALL=C sort | sha256sum | cut -d' ' -f1)
# a small tree for cp -a / tar / find / du
mkdir -p "$share/tree/a/b/c" "$share/tree/empty" "$share/tree/d"
for ((i = 0; i < 20; i++)); do head -c $((i * 997)) /dev/urandom >"$share/tree/a/f$i"; done
echo deep >"$share/tree/a/b/c/deep.txt"
chmod 0600 "$share/tree/a/f3"
chmod 0755 "$share/tree/a/f4"
ln -s ../a/b/c/deep.txt "$share/tree/d/link"
touch -d "2010-01-01 00:00:00" "$share/tree/a/f5"
read -r fs_blocks fs_frsize < <(stat -f -c '%b %S' "$share")
reboot_token="token-$RANDOM$RANDOM-$(date +%s)"

# ---- the guest ----------------------------------------------------------------
guest_hostfile_sha=$hostfile_sha
((sabotage)) && guest_hostfile_sha=$(echo "$hostfile_sha" | tr '0-9a-f' '1-9a-f0')
cat >"$work/env.sh" <<EOF
E2E_HOSTFILE_SHA=$guest_hostfile_sha
E2E_MANY_SHA=$many_sha
E2E_FS_BYTES=$((fs_blocks * fs_frsize))
E2E_ATIME=$(date -u -d '2001-02-03 04:05:06' +%s)
E2E_MTIME=$(date -u -d '2002-03-04 05:06:07' +%s)
E2E_REBOOT_TOKEN=$reboot_token
E2E_INJECT_KERNEL_PROBLEMS=$sabotage
EOF
vfsd_build_initramfs "$work/initrd" "$HERE/guest/e2e_checks.sh" "$work/env.sh:/guest/env.sh"

if ((sabotage)); then echo "== e2e: daemon=$daemon (SABOTAGE run: must FAIL)"; else echo "== e2e: daemon=$daemon"; fi
vfsd_start_daemon "$daemon" "$work/vhost.sock" "$share" "$work/daemon.log" "$binary" || exit 1
# Our daemon's confinement, read on the host while the guest has the share
# mounted (docs/security.md says what it must be): the pid the harness holds
# is the waiting parent, its child serves.
sampler=""
if [[ $daemon == ours ]]; then
  (
    for ((i = 0; i < 3000; i++)); do
      grep -q 'E2E mount PASS' "$work/console.log" 2>/dev/null && break
      sleep 0.1
    done
    p=$VFSD_DAEMON_PID
    c=$(awk '{print $1}' "/proc/$p/task/$p/children" 2>/dev/null)
    field() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status" 2>/dev/null; }
    {
      echo "parent_capeff $(field "$p" CapEff)"
      echo "child_capeff $(field "$c" CapEff)"
      echo "child_capbnd $(field "$c" CapBnd)"
      echo "child_seccomp $(field "$c" Seccomp)"
      echo "child_nonewprivs $(field "$c" NoNewPrivs)"
      for ns in mnt pid net; do
        [[ $(readlink "/proc/$c/ns/$ns") != "$(readlink "/proc/self/ns/$ns")" ]] && echo "child_new_$ns yes"
      done
    } >"$work/confinement.txt"
  ) &
  sampler=$!
fi
t0=$EPOCHREALTIME
qemu_rc=0
vfsd_boot_guest "$work/vhost.sock" "$work/initrd" "$work/console.log" "$limit" reboot || qemu_rc=$?
[[ -n $sampler ]] && wait "$sampler" 2>/dev/null
elapsed=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
daemon_self_exit=0
vfsd_stop_daemon 30 || daemon_self_exit=1

# ---- results --------------------------------------------------------------------
declare -A result detail
order=()

# Guest markers: "E2E <name> <PASS|FAIL> <detail>"
mount_passes=0
while read -r _ name res rest; do
  [[ $name == mount && $res == PASS ]] && ((++mount_passes))
  vfsd_record "$name" "$res" "$rest"
done < <(vfsd_console_lines "$work/console.log" 'E2E [a-z_0-9]* \(PASS\|FAIL\)')

expected_guest=(mount listing crud big_write hostfile_sha256 mkdir_rmdir rename_over hardlink
  symlink chmod_chown_utimes unlink_open many_host many_guest statfs nonroot_owner nonroot_denied
  tree_copy reboot_write reboot_read umount2 reboot2_read umount3)
for n in "${expected_guest[@]}"; do
  [[ -v "result[$n]" ]] || vfsd_record "$n" FAIL "marker missing from the guest console"
done

if [[ -f $work/console.log.daemon-died ]]; then
  vfsd_record guest_finished FAIL "the daemon died while the guest was running (QEMU stopped, status $qemu_rc)"
elif ((qemu_rc == 124 || qemu_rc == 137)); then
  vfsd_record guest_finished FAIL "QEMU killed by the ${limit}s time limit (hung guest?)"
elif ((qemu_rc != 0)); then
  vfsd_record guest_finished FAIL "QEMU exited with status $qemu_rc"
else
  vfsd_record guest_finished PASS
fi
vfsd_check guest_rebooted "mount marker seen $mount_passes times, expected 3 (boot + 2 reboots)" \
  test "$mount_passes" -eq 3
# Kernel warnings, BUGs and oopses, on the console and in the dmesg dump of
# each boot (3: the guest reboots twice).
while read -r name res rest; do vfsd_record "$name" "$res" "$rest"; done \
  < <(vfsd_kernel_checks "$work/console.log" 3)

if ((sabotage)) && [[ -f $share/big.bin ]]; then
  printf '\xff' | dd of="$share/big.bin" bs=1 seek=33333333 conv=notrunc status=none
fi

# Host-side verification, now that the guest is gone.
s=$share
crud_want=$(printf 'fXYst\0\0\0Z' | od -An -tx1)
vfsd_check host_crud "crud.txt on the host: $(od -An -tx1 "$s/crud.txt" 2>&1 | tr -s ' ')" \
  test "$(od -An -tx1 "$s/crud.txt" 2>/dev/null)" = "$crud_want"
big_guest=$(sed -n 's/.*sha256=\([0-9a-f]*\).*/\1/p' <<<"${detail[big_write]:-}")
big_host=$(sha256sum "$s/big.bin" 2>/dev/null | cut -d' ' -f1 || true)
vfsd_check host_big_sha256 "host sha256 '$big_host', guest wrote '$big_guest'" \
  test -n "$big_guest" -a "$big_host" = "$big_guest" -a "$(stat -c %s "$s/big.bin" 2>/dev/null)" = 67108864
vfsd_check host_mkdir_rmdir "kept missing or gone present" test -d "$s/kept" -a ! -e "$s/gone"
vfsd_check host_rename_over "ren-src/ren-dst wrong on the host" \
  test ! -e "$s/ren-src" -a "$(cat "$s/ren-dst" 2>/dev/null)" = one
vfsd_check host_hardlink "host: $(stat -c '%n ino=%i nlink=%h' "$s/link-a" "$s/link-b" 2>&1 | tr '\n' ' ')" \
  test "$(stat -c %i "$s/link-a" 2>/dev/null)" = "$(stat -c %i "$s/link-b" 2>/dev/null)" \
  -a "$(stat -c %h "$s/link-a" 2>/dev/null)" = 2
vfsd_check host_symlink "host readlink: '$(readlink "$s/sym-rel")' '$(readlink "$s/sym-dangling")'" \
  test "$(readlink "$s/sym-rel")" = link-a -a "$(readlink "$s/sym-dangling")" = /nonexistent/target
attrs_want="640 4321 5432 $(date -u -d '2001-02-03 04:05:06' +%s) $(date -u -d '2002-03-04 05:06:07' +%s)"
attrs_host=$(stat -c '%a %u %g %X %Y' "$s/attrs" 2>&1 || true)
vfsd_check host_chmod_chown_utimes "host stat '$attrs_host', expected '$attrs_want'" \
  test "$attrs_host" = "$attrs_want"
vfsd_check host_unlink_open "open-unlinked still exists on the host" test ! -e "$s/open-unlinked"
gmany_want=$(for ((i = 0; i < 2000; i++)); do echo "guest-file-$i"; done | LC_ALL=C sort)
vfsd_check host_many_guest "gmany on the host has $(ls -1 "$s/gmany" 2>/dev/null | wc -l) entries or wrong names" \
  test "$(ls -1 "$s/gmany" 2>/dev/null | LC_ALL=C sort)" = "$gmany_want"
owners=$(stat -c '%u:%g' "$s/userdir/ufile" "$s/userdir/udir" 2>&1 | tr '\n' ' ' || true)
vfsd_check host_nonroot_owner "host owners: $owners (want 1234:2345)" \
  test "$owners" = "1234:2345 1234:2345 " -a "$(cat "$s/userdir/ufile" 2>/dev/null)" = by-user
vfsd_check host_tree_copy "diff -r tree tree-cpa / untar/tree differs" \
  bash -c "diff -r '$s/tree' '$s/tree-cpa' >/dev/null 2>&1 && diff -r '$s/tree' '$s/untar/tree' >/dev/null 2>&1 &&
    [[ \$(stat -c %a '$s/tree-cpa/a/f3') == 600 && \$(stat -c %Y '$s/tree-cpa/a/f5') == \$(stat -c %Y '$s/tree/a/f5') ]] &&
    [[ \$(readlink '$s/tree-cpa/d/link') == ../a/b/c/deep.txt ]]"
vfsd_check host_reboot "reboot/data, reboot/after or reboot/after2 wrong, or phase file left" \
  test "$(cat "$s/reboot/data" 2>/dev/null)" = "$reboot_token" \
  -a "$(cat "$s/reboot/after" 2>/dev/null)" = "after-reboot $reboot_token" \
  -a "$(cat "$s/reboot/after2" 2>/dev/null)" = "after-reboot2 $reboot_token" -a ! -e "$s/reboot/phase"
if [[ $daemon == ours ]]; then
  # CHOWN DAC_OVERRIDE FOWNER FSETID SETGID SETUID MKNOD SETFCAP, and
  # DAC_READ_SEARCH for the default --inode-file-handles=prefer (docs/security.md).
  confinement_want="parent_capeff 0000000000000000
child_capeff 00000000880000df
child_capbnd 00000000880000df
child_seccomp 2
child_nonewprivs 1
child_new_mnt yes
child_new_pid yes
child_new_net yes"
  confinement_got=$(cat "$work/confinement.txt" 2>/dev/null || true)
  vfsd_check daemon_confinement "while mounted: $(tr '\n' ' ' <<<"$confinement_got")" \
    test "$confinement_got" = "$confinement_want"
fi
sanitizer=$(vfsd_sanitizer_reports "$work/daemon.log" || true)
vfsd_check daemon_sanitizers "the daemon log has sanitizer reports: $(head -n 1 <<<"$sanitizer")" \
  test -z "$sanitizer"
if ((daemon_self_exit)); then
  vfsd_record daemon_exit FAIL "the daemon did not exit by itself within 30s of QEMU quitting"
else
  vfsd_check daemon_exit "the daemon exited with status ${VFSD_DAEMON_EXIT:-?}, not 0" test "${VFSD_DAEMON_EXIT:-}" = 0
fi

# ---- report ---------------------------------------------------------------------
vfsd_report_checks 20
echo "   (guest run ${elapsed}s, QEMU status $qemu_rc; ${#order[@]} checks)"
if ((${#failed[@]})); then
  echo "E2E RESULT: FAIL (${#failed[@]} failed: ${failed[*]})"
  echo "--- last console lines ---"
  vfsd_console_tail "$work/console.log" 25 '^[0-9.]* (E2E|VFSD-KMSG)'
  if vfsd_kernel_problems "$work/console.log" dmesg >/dev/null; then
    echo "--- kernel problems (dmesg) ---"
    vfsd_kernel_problems "$work/console.log" dmesg | head -n 40
  fi
  echo "--- daemon log (last 25 lines) ---"
  tail -n 25 "$work/daemon.log"
  if ((sabotage)); then
    # The console shows the KERN_WARNING line only; the dmesg dump both.
    sabotaged="host_big_sha256 hostfile_sha256 kernel_console_clean kernel_log_clean"
    if [[ "$(printf '%s\n' "${failed[@]}" | sort | tr '\n' ' ')" == "$sabotaged " &&
      ${detail[kernel_console_clean]} == "1 line(s)"*vfsd-e2e-sabotage* &&
      ${detail[kernel_log_clean]} == "2 dmesg line(s)"*vfsd-e2e-sabotage* ]]; then
      echo "E2E SABOTAGE DETECTED: exactly the sabotaged checks failed"
    else
      echo "E2E SABOTAGE: unexpected set of failures"
    fi
  fi
  ((sabotage)) || keep=1 # keep the evidence of a real failure
  exit 1
fi
echo "E2E RESULT: PASS"
((sabotage)) && echo "E2E SABOTAGE NOT DETECTED: the harness passed a sabotaged run"
exit 0
