# Guest payload of the conformance suite (sourced by tests/e2e/guest/init).
# /guest/env.sh sets CONF_PROFILES: each profile is a virtio-fs device whose
# tag is the profile name. Each is mounted at /mnt/<profile> and the suite
# runs on it; its lines reach the host on the console as CONF[<profile>] ....
echo "CONF-GUEST kernel=$(uname -r) profiles=$CONF_PROFILES"
for p in $CONF_PROFILES; do
  mkdir -p "/mnt/$p"
  if ! mount -t virtiofs "$p" "/mnt/$p"; then
    echo "CONF[$p] guest/mount FAIL expected=0 got=mount_failed"
    continue
  fi
  /guest/vfsd_conformance run --mode=guest --profile="$p" "/mnt/$p" 2>&1 | sed "s/^/CONF[$p] /"
  if umount "/mnt/$p"; then
    echo "CONF[$p] guest/umount PASS expected=0 got=0"
  else
    echo "CONF[$p] guest/umount FAIL expected=0 got=umount_failed"
  fi
done
echo "CONF-GUEST-DONE"
