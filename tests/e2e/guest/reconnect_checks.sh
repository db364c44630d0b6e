# The --reconnect test's guest side (sourced by the init, busybox sh). The
# host says which guest this is in the share's reconnect/phase file:
#   1  write data, fsync it, hold files open, print E2E-RECONNECT-WRITTEN and
#      wait: the host kills this QEMU with SIGKILL (no unmount, no DESTROY);
#   2  (a new QEMU on the same daemon socket) read what guest 1 wrote, write
#      a file of its own, unmount, power off.
M=/mnt
mark() { # name PASS|FAIL detail...
  n=$1 r=$2
  shift 2
  echo "E2E $n $r $*"
}
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if ! vfsd_mount "$M" || ! grep -q " $M virtiofs " /proc/mounts; then
  mark mount FAIL "mount -t virtiofs ${vfsdtag:-share} $M failed"
  return 0 2>/dev/null || exit 0
fi
phase=$(cat "$M/reconnect/phase" 2>/dev/null)
mark mount PASS "phase=$phase uptime_cs=$(uptime_cs)"

if [ "$phase" = 1 ]; then
  mkdir -p "$M/reconnect/dir1"
  head -c $((4 * 1024 * 1024 + 777)) /dev/urandom >/tmp/data
  # dd conv=fsync: the bytes are on the host before the marker is printed.
  if dd if=/tmp/data of="$M/reconnect/data" bs=1M conv=fsync 2>/dev/null &&
    [ "$(sha_of "$M/reconnect/data")" = "$(sha_of /tmp/data)" ]; then
    mark guest1_write PASS "sha256=$(sha_of /tmp/data)"
  else
    mark guest1_write FAIL "writing $M/reconnect/data"
  fi
  sync
  # State the daemon holds for this guest when it dies: an open file, a
  # working directory, looked-up inodes.
  exec 3<"$M/hello.txt"
  cd "$M/reconnect/dir1" || true
  ls -la "$M" >/dev/null
  vfsd_kmsg_report
  echo "E2E-RECONNECT-WRITTEN"
  # Killed here by the host; never powers off by itself.
  sleep 600
  mark guest1_killed FAIL "guest 1 was not killed within 600 s"
  return 0 2>/dev/null || exit 0
fi

if [ "$phase" = 2 ]; then
  if [ -f "$M/reconnect/data" ]; then
    mark guest2_read PASS "sha256=$(sha_of "$M/reconnect/data") size=$(stat -c %s "$M/reconnect/data")"
  else
    mark guest2_read FAIL "$M/reconnect/data is missing"
  fi
  if [ -d "$M/reconnect/dir1" ] && [ "$(cat "$M/hello.txt")" = "hello from the host" ]; then
    mark guest2_tree PASS
  else
    mark guest2_tree FAIL "dir1 or hello.txt not as guest 1 and the host left them"
  fi
  echo "written by guest 2" >"$M/reconnect/from-guest2"
  sync
  if umount "$M"; then mark guest2_umount PASS; else mark guest2_umount FAIL "umount failed"; fi
  return 0 2>/dev/null || exit 0
fi
mark phase FAIL "reconnect/phase is '$phase'"
