# The guest side of tests/e2e/run_launcher_test.sh (sourced by the init,
# busybox sh). One virtio-fs device per launcher variant; for each tag in
# $E2E_TAGS (variables E2E_<field>_<index> from /guest/env.sh):
#   mount_<tag>   mount -t virtiofs, seen in /proc/mounts
#   read_<tag>    the host's hello.txt has the content the host wrote, and
#                 its owner is E2E_OWNER_<i> when that is set (id translation)
#   write_<tag>   a file written and read back (the host checks its bytes), or,
#                 for a read-only variant (E2E_RO_<i>=1), the write is refused
#   umount_<tag>  umount
# Then "E2E-STOP-POINT": with E2E_WAIT=1 the host now stops the daemons the
# launcher's way (a signal) and ends QEMU itself; the guest waits.
# shellcheck disable=SC2154 # E2E_* come from env.sh; the eval assigns the rest
i=0
for tag in $E2E_TAGS; do
  eval "host_want=\$E2E_HOST_$i guest_token=\$E2E_GUEST_$i ro=\$E2E_RO_$i owner_want=\$E2E_OWNER_$i"
  m=/mnt/$tag
  mkdir -p "$m"
  if mount -t virtiofs "$tag" "$m" 2>/tmp/mount.err && grep -q " $m virtiofs " /proc/mounts; then
    echo "E2E mount_$tag PASS"
  else
    echo "E2E mount_$tag FAIL $(tr '\n' ' ' </tmp/mount.err)"
    i=$((i + 1))
    continue
  fi
  got=$(cat "$m/hello.txt" 2>&1)
  owner=$(stat -c %u:%g "$m/hello.txt" 2>&1)
  if [ "$got" != "$host_want" ]; then
    echo "E2E read_$tag FAIL hello.txt has '$got', expected '$host_want'"
  elif [ -n "$owner_want" ] && [ "$owner" != "$owner_want" ]; then
    echo "E2E read_$tag FAIL hello.txt is owned by $owner in the guest, expected $owner_want"
  else
    echo "E2E read_$tag PASS owner=$owner"
  fi
  if [ "$ro" = 1 ]; then
    if { echo "$guest_token" >"$m/guest.txt"; } 2>/tmp/write.err; then
      echo "E2E write_$tag FAIL a write to a --readonly share succeeded"
    elif [ -e "$m/guest.txt" ]; then
      echo "E2E write_$tag FAIL the refused write left guest.txt behind"
    else
      echo "E2E write_$tag PASS refused: $(tr '\n' ' ' </tmp/write.err)"
    fi
  else
    if echo "$guest_token" >"$m/guest.txt" && sync && [ "$(cat "$m/guest.txt")" = "$guest_token" ]; then
      echo "E2E write_$tag PASS owner=$(stat -c %u:%g "$m/guest.txt")"
    else
      echo "E2E write_$tag FAIL guest.txt could not be written and read back"
    fi
  fi
  if umount "$m"; then echo "E2E umount_$tag PASS"; else echo "E2E umount_$tag FAIL"; fi
  i=$((i + 1))
done
if [ "${E2E_WAIT:-0}" = 1 ]; then
  sync
  vfsd_kmsg_report
  echo "E2E-STOP-POINT"
  # The host signals the daemons, then stops QEMU; never return to the init
  # (its poweroff would race with that).
  sleep 3600
fi
echo "E2E-STOP-POINT"
