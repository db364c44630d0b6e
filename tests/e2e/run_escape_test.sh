#!/usr/bin/env bash
# Escape tests: a client tries to get out of the share (symlinks pointing
# outside, ".." at the root and after a host-side rename, FUSE_SYMLINK with an
# absolute target, hard links the host made, /proc/self/fd/N names, device
# nodes and FIFOs, a setgid folder and a non-member user; the attempts are
# tests/e2e/guest/escape_checks.sh), against our daemon in one sandbox mode.
# Afterwards the host asserts that nothing outside the share was read,
# written or created.
#
#   run_escape_test.sh --where=guest|host --sandbox=namespace|chroot|none
#                      [--binary PATH] [--timeout S] [--sabotage] [--keep]
#
#   --where=guest  a Linux guest (QEMU, TCG) mounts the share over virtio-fs
#   --where=host   the daemon serves a FUSE mount on the host (--fuse-mount);
#                  the attempts run chrooted in a jail whose /mnt is that
#                  mount, so that, as in a guest, the client resolves
#                  symlinks and ".." in a root of its own
#   --sabotage     the host itself changes a file outside the share during
#                  the run: the run must FAIL, and prints "ESCAPE SABOTAGE
#                  DETECTED" when exactly that check failed
#
# Layout: WORK/outside holds the files a client must not reach (each reads
# "$secret"); WORK/share is the share; WORK/jail the host client's root.
# Exit status: 0 passed, 1 a check failed, 2 usage or set-up error.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

where="" mode="" binary="$VFSD_ROOT/build/virtiofsd" limit=240 sabotage=0 keep=0
vfsd_e2e_args 2,24 "where sandbox:mode" "" "$@"
[[ $where == guest || $where == host ]] || { echo "--where=guest|host is required" >&2; exit 2; }
[[ $mode == namespace || $mode == chroot || $mode == none ]] ||
  { echo "--sandbox=namespace|chroot|none is required" >&2; exit 2; }
vfsd_need_binary "$binary"
if [[ $where == guest ]]; then
  vfsd_kernel_image >/dev/null || { echo "no guest kernel: run scripts/install-deps.sh" >&2; exit 2; }
fi

vfsd_work_dir escape
chmod 0755 "$work"
share=$work/share outside=$work/outside jail=$work/jail
mnt_pid=""
vfsd_e2e_cleanup() { # the host client's mount
  [[ -n $mnt_pid ]] && kill "$mnt_pid" 2>/dev/null
  umount -l "$jail/mnt" 2>/dev/null || true
}

# ---- what the client must not reach, and the share ----------------------------
secret="SECRET-OUTSIDE-$RANDOM$RANDOM"
mkdir -p "$outside/dir" "$share/deep" "$share/mv/a/b"
for f in secret.txt dir/inner.txt 0 3; do echo "$secret" >"$outside/$f"; done
echo linked >"$outside/linked.txt"
echo "control $secret" >"$share/control.txt"
chmod 0644 "$outside/secret.txt"
ln -s "$outside/secret.txt" "$share/abs_out"
ln -s ../outside/secret.txt "$share/rel_out"
ln -s ../../outside/secret.txt "$share/deep/rel_out2"
ln "$outside/linked.txt" "$share/hl_out" # the host's own choice: a link into the share
mkdir -m 2777 "$share/sgid"
chown 0:4321 "$share/sgid"
chmod 2777 "$share/sgid"
# The state of everything outside the share: names, types, sizes, modes,
# owners, times and contents.
snapshot() {
  # The harness's own files at the top are left out.
  (cd "$work" && find . -path ./share -prune -o -path ./jail -prune -o -path './client.out' \
    -prune -o -path ./daemon.log -prune -o -path './console.log*' -prune -o -path ./initrd \
    -prune -o -path ./client_env.sh -prune -o -path './vhost.sock*' -prune -o -path \
    ./before.txt -prune -o -path ./after.txt -prune -o -path . -o \
    -printf '%p %y %s %m %U:%G %T@ %C@\n' | LC_ALL=C sort |
    sed '/^\.\/outside\/linked\.txt /s/ [0-9.]*$//') # its links change its ctime
  find "$outside" -type f -exec sha256sum {} + | LC_ALL=C sort
  ls -a / | LC_ALL=C sort
}
snapshot >"$work/before.txt"

cat >"$work/client_env.sh" <<EOF
ESC_SECRET=$secret
ESC_OUTSIDE=$outside
EOF

if ((sabotage)); then echo "== escape: $where, --sandbox=$mode (SABOTAGE run: must FAIL)"; else
  echo "== escape: $where, --sandbox=$mode"; fi

# The client's output, wherever it runs; "ESC-WAIT moved" in it is the cue
# for the host-side rename.
client_out=""
rename_when_asked() {
  local i
  for ((i = 0; i < limit * 10; i++)); do
    grep -q 'ESC-WAIT moved' "$client_out" 2>/dev/null && break
    sleep 0.1
  done
  mv "$share/mv/a/b" "$share/moved_b"
  ((sabotage)) && echo "changed by the host" >>"$outside/secret.txt"
  return 0
}

client_rc=0
if [[ $where == guest ]]; then
  client_out=$work/console.log
  vfsd_build_initramfs "$work/initrd" "$HERE/guest/escape_guest.sh" \
    "$HERE/guest/escape_checks.sh:/guest/escape_checks.sh" "$work/client_env.sh:/guest/env.sh"
  VFSD_DAEMON_ARGS="--sandbox=$mode" vfsd_start_daemon ours "$work/vhost.sock" "$share" \
    "$work/daemon.log" "$binary" || exit 2
  rename_when_asked &
  renamer=$!
  vfsd_boot_guest "$work/vhost.sock" "$work/initrd" "$work/console.log" "$limit" || client_rc=$?
  kill "$renamer" 2>/dev/null || true
  wait "$renamer" 2>/dev/null || true
  daemon_rc=0
  vfsd_stop_daemon 30 || daemon_rc=timeout
  [[ $daemon_rc == 0 ]] && daemon_rc=${VFSD_DAEMON_EXIT:-0}
else
  client_out=$work/client.out
  # The jail: static busybox, the guest image's users, /dev/null, and /mnt.
  mkdir -p "$jail"/{bin,etc,dev,tmp,mnt}
  chmod 1777 "$jail/tmp"
  cp /bin/busybox "$jail/bin/busybox"
  chroot "$jail" /bin/busybox --install -s /bin
  mknod -m 0666 "$jail/dev/null" c 1 3
  printf 'root:x:0:0:root:/:/bin/sh\ne2euser:x:1234:2345::/tmp:/bin/sh\n' >"$jail/etc/passwd"
  printf 'root:x:0:\ne2egroup:x:2345:\n' >"$jail/etc/group"
  {
    cat "$work/client_env.sh"
    echo 'ESC_M=/mnt'
    echo 'ESC_USER_RUN="/bin/busybox su -s /bin/sh e2euser -c"'
  } >"$jail/client_env.sh"
  cp "$HERE/guest/escape_checks.sh" "$jail/escape_checks.sh"
  vfsd_sanitizer_env
  echo "+ $binary --shared-dir=$share --fuse-mount=$jail/mnt --sandbox=$mode" >"$work/daemon.log"
  "$binary" "--shared-dir=$share" "--fuse-mount=$jail/mnt" "--sandbox=$mode" \
    >>"$work/daemon.log" 2>&1 &
  mnt_pid=$!
  for ((i = 0; i < 300; i++)); do
    mountpoint -q "$jail/mnt" && break
    kill -0 "$mnt_pid" 2>/dev/null || break
    sleep 0.1
  done
  mountpoint -q "$jail/mnt" || { echo "the FUSE mount did not appear; daemon log:" >&2; sed 's/^/  | /' "$work/daemon.log" >&2; exit 2; }
  rename_when_asked &
  renamer=$!
  timeout "$limit" chroot "$jail" /bin/busybox env -i PATH=/bin \
    /bin/busybox sh -c '. /client_env.sh; . /escape_checks.sh' >"$client_out" 2>&1 || client_rc=$?
  kill "$renamer" 2>/dev/null || true
  wait "$renamer" 2>/dev/null || true
  daemon_rc=0
  kill -TERM "$mnt_pid" 2>/dev/null || daemon_rc=died
  wait "$mnt_pid" 2>/dev/null || daemon_rc=$?
  mnt_pid=""
  umount -l "$jail/mnt" 2>/dev/null || true
fi

# ---- results -------------------------------------------------------------------
fails=() passes=0
record() { # name PASS|FAIL detail
  if [[ $2 == PASS ]]; then ((++passes)); else fails+=("$1: ${3:-}"); fi
  printf '  %-28s %s %s\n' "$1" "$2" "${3:-}"
}
hcheck() { # name detail command...
  local n=$1 d=$2
  shift 2
  if "$@"; then record "$n" PASS; else record "$n" FAIL "$d"; fi
}

expected=(control_read abs_symlink_read rel_symlink_read deep_rel_symlink_read symlink_write_attempted
  symlink_target_kept dotdot_at_root dotdot_after_rename slash_name guest_symlink_read
  guest_symlink_write_attempted host_hardlink hardlink_cross_mount proc_fd_names
  proc_fd_write_attempted special_nodes sgid_user_ran user_reads done)
[[ $where == guest ]] && expected=(mount "${expected[@]}" umount)
declare -A seen
while read -r _ name res rest; do
  seen[$name]=1
  record "$name" "$res" "$rest"
done < <(if [[ $where == guest ]]; then vfsd_console_lines "$client_out" 'ESC [a-z_0-9]* \(PASS\|FAIL\)'; else
  grep '^ESC [a-z_0-9]* \(PASS\|FAIL\)' "$client_out"; fi)
for n in "${expected[@]}"; do
  [[ -v "seen[$n]" ]] || record "$n" FAIL "marker missing from the client's output"
done
if [[ $where == guest ]]; then
  while read -r name res rest; do record "$name" "$res" "$rest"; done \
    < <(vfsd_kernel_checks "$client_out" 1)
fi
# The daemon lived to the end (a seccomp kill would show here: status 159)
# and exited cleanly when told to.
hcheck daemon_exit "the daemon's exit status is $daemon_rc" test "$daemon_rc" = 0
hcheck client_finished "the client exited with status $client_rc" test "$client_rc" -eq 0

snapshot >"$work/after.txt"
hcheck outside_unchanged "$(diff "$work/before.txt" "$work/after.txt" | head -5 | tr '\n' ' ')" \
  cmp -s "$work/before.txt" "$work/after.txt"
hcheck guest_symlink_stored "share/guest_abs is not the symlink the client made" \
  test "$(readlink "$share/guest_abs" 2>/dev/null)" = "$outside/secret.txt"
hcheck rename_happened "share/moved_b missing" test -d "$share/moved_b"
hcheck nodes_in_share "share/dev_zero, share/fifo" test -c "$share/dev_zero" -a -p "$share/fifo"
st_file=$(stat -c '%u:%g %a' "$share/sgid/ufile" 2>&1 || true)
st_deeper=$(stat -c '%u:%g %a' "$share/sgid/udir/deeper" 2>&1 || true)
hcheck sgid_no_setgid_file "sgid/ufile is '$st_file' (want 1234:4321 755: no setgid bit)" \
  test "$st_file" = "1234:4321 755"
hcheck sgid_inherited "sgid/udir/deeper is '$st_deeper' (want 1234:4321 and no setgid bit)" \
  test "${st_deeper% *}" = "1234:4321" -a "${st_deeper##* }" = 644
hcheck sgid_dir_inherits "sgid/udir has no setgid bit" test -g "$share/sgid/udir"
# Nothing the client created in its own root reached the host's.
hcheck nothing_at_host_root "an escape_* file at /" \
  test -z "$(find / -maxdepth 1 -name 'escape_*' -newer "$work/before.txt" 2>/dev/null)"
out_of_share=$(find "$work" -path "$share" -prune -o -path "$jail" -prune -o -name 'escape_*' -print)
hcheck nothing_created_outside "created: $out_of_share" test -z "$out_of_share"
if grep -q 'seccomp\|Bad system call' "$work/daemon.log"; then
  record daemon_log FAIL "$(grep -m1 'seccomp\|Bad system call' "$work/daemon.log")"
else
  record daemon_log PASS
fi

echo "== escape ($where, --sandbox=$mode): ${passes} passed, ${#fails[@]} failed"
if ((sabotage)); then
  if ((${#fails[@]} == 1)) && [[ ${fails[0]} == outside_unchanged:* ]]; then
    echo "ESCAPE SABOTAGE DETECTED"
  fi
  exit 1
fi
if ((${#fails[@]})); then
  echo "daemon log:"
  sed 's/^/  | /' "$work/daemon.log" | tail -20
  exit 1
fi
exit 0
