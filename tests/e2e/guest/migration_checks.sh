# The live-migration test's guest side (sourced by the init, busybox sh; the
# host's tests/e2e/run_migration_test.sh migrates this guest while it runs).
# /guest/env.sh sets mig_case (append, missing-file or unlinked).
#
# It mounts the share, opens mig/f for appending (fd 3, O_APPEND) and for
# reading (fd 4), both held open across the migrations; with
# mig_case=unlinked it then removes mig/f (the fds stay open). It appends
# numbered lines 1, 2, ... through fd 3, one every 20 ms, and prints
# E2E-MIG-RUNNING once, then E2E-MIG-PROGRESS n=N after every 10th line
# (line N is written when it is printed). A write that fails is reported
# (E2E-MIG-WRITE-ERROR n=N err=...) and ends the appending. When the host
# creates mig/stop (checked every 10 lines) it prints E2E-MIG-STOPPED
# last=N, drops its page cache and reads the file back through fd 4 (and by
# path unless unlinked): E2E-MIG-READBACK via=fd4|path status=ok|bad|error
# lines=... The host judges those facts per case.
M=/mnt
D=$M/mig
F=$D/f
mark() { # name PASS|FAIL detail...
  n=$1 r=$2
  shift 2
  echo "E2E $n $r $*"
}

if ! vfsd_mount "$M" || ! grep -q " $M virtiofs " /proc/mounts; then
  mark mount FAIL "mount -t virtiofs ${vfsdtag:-share} $M failed"
  return 0 2>/dev/null || exit 0
fi
mark mount PASS "kernel=$(uname -r) case=${mig_case:-append}"

# fd 3 appends, fd 4 reads; both live through the migrations.
if ! exec 3>>"$F"; then
  mark open FAIL "cannot open $F for appending"
  return 0 2>/dev/null || exit 0
fi
if ! exec 4<"$F"; then
  mark open FAIL "cannot open $F for reading"
  return 0 2>/dev/null || exit 0
fi
mark open PASS
if [ "${mig_case:-}" = unlinked ]; then
  if rm "$F" && [ ! -e "$F" ]; then
    mark unlink PASS "fds 3 and 4 stay open"
  else
    mark unlink FAIL "rm $F failed or it is still there"
  fi
fi

i=0
stopped=""
echo "E2E-MIG-RUNNING"
while :; do
  n=$((i + 1))
  if ! echo "$n" >&3 2>/tmp/werr; then
    echo "E2E-MIG-WRITE-ERROR n=$n err=$(tr '\n' ' ' </tmp/werr)"
    break
  fi
  i=$n
  if [ $((i % 10)) = 0 ]; then
    echo "E2E-MIG-PROGRESS n=$i"
    if [ -e "$D/stop" ]; then
      stopped=1
      break
    fi
  fi
  usleep 20000
done
# After a write error: no more writes, wait for the host's stop (bounded).
w=0
while [ -z "$stopped" ] && [ ! -e "$D/stop" ] && [ $w -lt 3000 ]; do
  usleep 200000
  w=$((w + 1))
done
echo "E2E-MIG-STOPPED last=$i"

# readback NAME: checks /tmp/back (just read) holds exactly 1..$i, one a line.
readback() {
  lines=$(wc -l </tmp/back)
  nul=$(tr -cd '\000' </tmp/back | wc -c)
  seq 1 "$i" >/tmp/want
  if cmp -s /tmp/back /tmp/want; then st=ok; else st=bad; fi
  echo "E2E-MIG-READBACK via=$1 status=$st lines=$lines last=$(tail -n 1 /tmp/back) nul=$nul"
}
echo 3 >/proc/sys/vm/drop_caches
if cat <&4 >/tmp/back 2>/tmp/rerr; then
  readback fd4
else
  echo "E2E-MIG-READBACK via=fd4 status=error err=$(tr '\n' ' ' </tmp/rerr)"
fi
if [ "${mig_case:-}" = append ]; then
  if cat "$F" >/tmp/back 2>/tmp/rerr; then
    readback path
  else
    echo "E2E-MIG-READBACK via=path status=error err=$(tr '\n' ' ' </tmp/rerr)"
  fi
fi
exec 3>&- 4<&-
if umount "$M"; then mark umount PASS; else mark umount FAIL "umount failed"; fi
