# Guest payload of run_escape_test.sh (sourced by the init, busybox sh):
# mounts the share at /mnt, makes the escape attempts, unmounts.
ESC_M=/mnt
ESC_USER_RUN="su -s /bin/sh e2euser -c"
if vfsd_mount "$ESC_M"; then
  echo "ESC mount PASS"
  . /guest/escape_checks.sh
  sync
  umount "$ESC_M" && echo "ESC umount PASS" || echo "ESC umount FAIL"
else
  echo "ESC mount FAIL mount -t virtiofs ${vfsdtag:-share} $ESC_M failed"
fi
