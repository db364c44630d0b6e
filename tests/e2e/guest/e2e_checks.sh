# The end-to-end checks, run inside the guest (sourced by the init, busybox sh).
# Each check prints one marker line "E2E <name> PASS|FAIL <detail>"; the host
# collects them and, after poweroff, verifies on the host what applies.
# Expectations computed by the host come from /guest/env.sh (E2E_* variables).
# Boot 1 runs everything, then reboots; boot 2 (found by the phase file in the
# share) checks that the data written before the reboot is still there,
# writes more and reboots again; boot 3 checks both.

M=/mnt

mark() { # name PASS|FAIL detail...
  n=$1 r=$2
  shift 2
  echo "E2E $n $r $*"
}
check() { # name detail-on-failure command...: PASS if the command succeeds
  n=$1 d=$2
  shift 2
  if "$@"; then mark "$n" PASS; else mark "$n" FAIL "$d"; fi
}
drop_caches() {
  sync
  echo 3 >/proc/sys/vm/drop_caches
}
sha_of() { sha256sum "$1" | cut -d' ' -f1; }

echo "E2E-INFO boot uname=$(uname -r) uptime_cs=$(uptime_cs)"
if vfsd_mount "$M" && grep -q " $M virtiofs " /proc/mounts; then
  mark mount PASS "uptime_cs=$(uptime_cs)"
else
  mark mount FAIL "mount -t virtiofs ${vfsdtag:-share} $M failed"
  echo "E2E-DONE"
  return 0 2>/dev/null || exit 0
fi

if [ "$(cat "$M/reboot/phase" 2>/dev/null)" = 2 ]; then
  # ---- boot 2: after the first guest reboot -------------------------------
  got=$(cat "$M/reboot/data" 2>&1)
  if [ "$got" = "$E2E_REBOOT_TOKEN" ]; then
    mark reboot_read PASS
  else
    mark reboot_read FAIL "after reboot read '$got', expected '$E2E_REBOOT_TOKEN'"
  fi
  echo "after-reboot $E2E_REBOOT_TOKEN" >"$M/reboot/after"
  echo 3 >"$M/reboot/phase"
  sync
  if umount "$M"; then mark umount2 PASS; else mark umount2 FAIL "umount failed"; fi
  echo "E2E-INFO rebooting again uptime_cs=$(uptime_cs)"
  vfsd_kmsg_report
  reboot -f
  sleep 60
fi
if [ "$(cat "$M/reboot/phase" 2>/dev/null)" = 3 ]; then
  # ---- boot 3: after the second guest reboot ------------------------------
  got=$(cat "$M/reboot/data" 2>&1)
  after=$(cat "$M/reboot/after" 2>&1)
  if [ "$got" = "$E2E_REBOOT_TOKEN" ] && [ "$after" = "after-reboot $E2E_REBOOT_TOKEN" ]; then
    mark reboot2_read PASS
  else
    mark reboot2_read FAIL "after the second reboot read '$got' and '$after'"
  fi
  echo "after-reboot2 $E2E_REBOOT_TOKEN" >"$M/reboot/after2"
  rm -f "$M/reboot/phase"
  sync
  if umount "$M"; then mark umount3 PASS; else mark umount3 FAIL "umount failed"; fi
  echo "E2E-DONE"
  return 0 2>/dev/null || exit 0
fi

# ---- boot 1 -----------------------------------------------------------------

# The sabotage run proves the kernel checks: a line at KERN_WARNING must show
# on the console (its loglevel lets warnings through), and one at KERN_INFO,
# below the console's level, must still be found in the dmesg dump.
if [ "${E2E_INJECT_KERNEL_PROBLEMS:-0}" = 1 ]; then
  echo "<4>WARNING: CPU: 0 PID: $$ at vfsd-e2e-sabotage (injected, KERN_WARNING)" >/dev/kmsg
  echo "<6>BUG: vfsd-e2e-sabotage (injected, KERN_INFO: only in dmesg)" >/dev/kmsg
fi

# listing: what the host put there before boot
names=$(ls -1 "$M" | tr '\n' ' ')
ok=1
for n in hello.txt subdir hostfile.bin many tree; do
  case " $names" in *" $n "*) ;; *) ok=0 ;; esac
done
[ "$(cat "$M/subdir/nested.txt" 2>/dev/null)" = "nested file" ] || ok=0
[ "$(cat "$M/hello.txt" 2>/dev/null)" = "hello from the host" ] || ok=0
if [ $ok = 1 ]; then mark listing PASS; else mark listing FAIL "ls: $names"; fi

# create/read/write/append/truncate
f=$M/crud.txt
ok=1 why=""
echo "first line" >"$f" || { ok=0; why="create"; }
[ "$(cat "$f")" = "first line" ] || { ok=0; why="$why read1"; }
echo "second line" >>"$f" || { ok=0; why="$why append"; }
[ "$(cat "$f")" = "first line
second line" ] || { ok=0; why="$why read2"; }
truncate -s 5 "$f" || { ok=0; why="$why truncate"; }
[ "$(stat -c %s "$f")" = 5 ] || { ok=0; why="$why size=$(stat -c %s "$f")"; }
printf 'XY' | dd of="$f" bs=1 seek=1 conv=notrunc 2>/dev/null || { ok=0; why="$why overwrite"; }
drop_caches
[ "$(cat "$f")" = "fXYst" ] || { ok=0; why="$why final='$(cat "$f")'"; }
truncate -s 8 "$f" && printf 'Z' >>"$f" # a hole of three zero bytes, then Z
[ "$(od -An -c "$f" | tr -s ' ')" = " f X Y s t \0 \0 \0 Z" ] || { ok=0; why="$why extend"; }
if [ $ok = 1 ]; then mark crud PASS; else mark crud FAIL "$why"; fi

# a 64 MiB file written in the guest (1 MiB writes), read back uncached
dd if=/dev/urandom of=/tmp/big bs=1M count=64 2>/dev/null
want=$(sha_of /tmp/big)
if dd if=/tmp/big of="$M/big.bin" bs=1M conv=fsync 2>/dev/null; then
  rm -f /tmp/big
  drop_caches
  got=$(sha_of "$M/big.bin")
  if [ "$got" = "$want" ] && [ "$(stat -c %s "$M/big.bin")" = 67108864 ]; then
    mark big_write PASS "sha256=$want"
  else
    mark big_write FAIL "sha256=$want read back $got"
  fi
else
  rm -f /tmp/big
  mark big_write FAIL "dd to $M/big.bin failed sha256=$want"
fi

# a host-written file checksummed in the guest
drop_caches
got=$(sha_of "$M/hostfile.bin")
if [ "$got" = "$E2E_HOSTFILE_SHA" ]; then
  mark hostfile_sha256 PASS
else
  mark hostfile_sha256 FAIL "guest sha256 $got, host wrote $E2E_HOSTFILE_SHA"
fi

# mkdir/rmdir
ok=1
mkdir "$M/gone" && mkdir "$M/gone/inner" && mkdir "$M/kept" || ok=0
[ -d "$M/gone/inner" ] || ok=0
rmdir "$M/gone" 2>/dev/null && ok=0 # not empty: must fail
rmdir "$M/gone/inner" && rmdir "$M/gone" || ok=0
[ ! -e "$M/gone" ] && [ -d "$M/kept" ] || ok=0
if [ $ok = 1 ]; then mark mkdir_rmdir PASS; else mark mkdir_rmdir FAIL "$(ls -la "$M" | tr '\n' '|')"; fi

# rename over an existing file
echo one >"$M/ren-src" && echo two >"$M/ren-dst"
if mv -f "$M/ren-src" "$M/ren-dst" && [ ! -e "$M/ren-src" ] && [ "$(cat "$M/ren-dst")" = one ]; then
  mark rename_over PASS
else
  mark rename_over FAIL "src exists: $([ -e "$M/ren-src" ] && echo y) dst='$(cat "$M/ren-dst")'"
fi

# hard link
echo linked >"$M/link-a"
if ln "$M/link-a" "$M/link-b" &&
  [ "$(stat -c %i "$M/link-a")" = "$(stat -c %i "$M/link-b")" ] &&
  [ "$(stat -c %h "$M/link-a")" = 2 ] && [ "$(cat "$M/link-b")" = linked ]; then
  mark hardlink PASS
else
  mark hardlink FAIL "ino $(stat -c %i "$M/link-a") $(stat -c %i "$M/link-b") nlink $(stat -c %h "$M/link-a")"
fi

# symlink + readlink (a relative target, and one that dangles)
ok=1
ln -s link-a "$M/sym-rel" && ln -s /nonexistent/target "$M/sym-dangling" || ok=0
[ "$(readlink "$M/sym-rel")" = link-a ] && [ "$(cat "$M/sym-rel")" = linked ] || ok=0
[ "$(readlink "$M/sym-dangling")" = /nonexistent/target ] && [ -L "$M/sym-dangling" ] || ok=0
if [ $ok = 1 ]; then mark symlink PASS; else mark symlink FAIL "readlink '$(readlink "$M/sym-rel")'"; fi

# chmod/chown/utimes (the host checks the same values after poweroff)
f=$M/attrs
echo attrs >"$f"
ok=1
chmod 0640 "$f" && chown 4321:5432 "$f" || ok=0
touch -a -d "2001-02-03 04:05:06" "$f" && touch -m -d "2002-03-04 05:06:07" "$f" || ok=0
drop_caches
st=$(stat -c '%a %u %g %X %Y' "$f")
[ "$st" = "640 4321 5432 $E2E_ATIME $E2E_MTIME" ] || ok=0
if [ $ok = 1 ]; then mark chmod_chown_utimes PASS; else mark chmod_chown_utimes FAIL "stat: $st"; fi

# unlink of an open file: still readable through the open fd
f=$M/open-unlinked
echo "still readable" >"$f"
exec 7<"$f"
rm "$f"
drop_caches # the read below must reach the daemon, not the page cache
got=$(cat <&7)
exec 7<&-
if [ ! -e "$f" ] && [ "$got" = "still readable" ]; then
  mark unlink_open PASS
else
  mark unlink_open FAIL "exists: $([ -e "$f" ] && echo y) read '$got'"
fi

# 2000 entries made on the host: listed completely (count and names)
drop_caches
cnt=$(ls -1 "$M/many" | wc -l)
sum=$(ls -1 "$M/many" | LC_ALL=C sort | sha256sum | cut -d' ' -f1)
fcnt=$(find "$M/many" -mindepth 1 | wc -l)
if [ "$cnt" = 2000 ] && [ "$fcnt" = 2000 ] && [ "$sum" = "$E2E_MANY_SHA" ]; then
  mark many_host PASS
else
  mark many_host FAIL "ls count $cnt find count $fcnt names sha256 $sum (host $E2E_MANY_SHA)"
fi
# 2000 entries made in the guest (the host checks them after poweroff)
mkdir "$M/gmany"
i=0
while [ $i -lt 2000 ]; do
  : >"$M/gmany/guest-file-$i"
  i=$((i + 1))
done
drop_caches
cnt=$(ls -1 "$M/gmany" | wc -l)
if [ "$cnt" = 2000 ]; then mark many_guest PASS; else mark many_guest FAIL "count $cnt"; fi

# statfs: sane numbers, and the same size as the host's filesystem
set -- $(stat -f -c '%b %f %a %S %c %d %l' "$M")
blocks=$1 bfree=$2 bavail=$3 frsize=$4 files=$5 ffree=$6 namemax=$7
total=$((blocks * frsize))
if [ "$blocks" -gt 0 ] && [ "$frsize" -gt 0 ] && [ "$bfree" -le "$blocks" ] &&
  [ "$bavail" -le "$bfree" ] && [ "$ffree" -le "$files" ] && [ "$namemax" -ge 255 ] &&
  [ "$total" = "$E2E_FS_BYTES" ] && df "$M" >/dev/null; then
  mark statfs PASS "bytes=$total"
else
  mark statfs FAIL "blocks=$blocks free=$bfree avail=$bavail frsize=$frsize files=$files ffree=$ffree namemax=$namemax bytes=$total host=$E2E_FS_BYTES"
fi
echo "E2E-INFO df: $(df "$M" | tail -n 1)"

# a file created by a non-root user is owned by that uid/gid
mkdir "$M/userdir" && chmod 1777 "$M/userdir"
out=$(su -s /bin/sh e2euser -c "id -u; id -g; echo by-user >$M/userdir/ufile; mkdir $M/userdir/udir" 2>&1)
st="$(stat -c '%u:%g' "$M/userdir/ufile" 2>&1) $(stat -c '%u:%g' "$M/userdir/udir" 2>&1)"
if [ "$(echo $out)" = "1234 2345" ] && [ "$st" = "1234:2345 1234:2345" ]; then
  mark nonroot_owner PASS
else
  mark nonroot_owner FAIL "su said '$(echo $out)', owners $st"
fi
# the non-root user must not write where only root may
if su -s /bin/sh e2euser -c "echo x >$M/kept/denied" 2>/dev/null; then
  mark nonroot_denied FAIL "user 1234 could write into a root-owned 0755 folder"
else
  mark nonroot_denied PASS
fi

# everyday file work: cp -a, tar, find, du on a small tree
ok=1 why=""
cp -a "$M/tree" "$M/tree-cpa" || { ok=0; why="cp -a"; }
(cd "$M" && tar cf - tree) | (mkdir -p "$M/untar" && cd "$M/untar" && tar xf -) || { ok=0; why="$why tar"; }
drop_caches
a=$(cd "$M/tree" && find . | LC_ALL=C sort | sha256sum)
b=$(cd "$M/tree-cpa" && find . | LC_ALL=C sort | sha256sum)
c=$(cd "$M/untar/tree" && find . | LC_ALL=C sort | sha256sum)
[ "$a" = "$b" ] && [ "$a" = "$c" ] || { ok=0; why="$why find differs"; }
d=$(cd "$M/tree" && find . -type f -exec cat {} + | sha256sum)
e=$(cd "$M/tree-cpa" && find . -type f -exec cat {} + | sha256sum)
[ "$d" = "$e" ] || { ok=0; why="$why contents differ"; }
du -s "$M/tree" >/dev/null || { ok=0; why="$why du"; }
if [ $ok = 1 ]; then mark tree_copy PASS; else mark tree_copy FAIL "$why"; fi

# reboot: write data and the phase file, reboot; boot 2 reads them back
mkdir -p "$M/reboot"
echo "$E2E_REBOOT_TOKEN" >"$M/reboot/data"
echo 2 >"$M/reboot/phase"
sync
mark reboot_write PASS
echo "E2E-INFO rebooting uptime_cs=$(uptime_cs)"
vfsd_kmsg_report
reboot -f
sleep 60
