# Guest payload of the conformance suite (sourced by tests/e2e/guest/init).
# /guest/env.sh sets CONF_PROFILES: each profile is a virtio-fs device whose
# tag is the profile name. Each is mounted at /mnt/<profile> and the suite
# runs on it. Every line reaches the host on the console as
# "CONF[<profile>] <line>": the suite's CONF lines and its CONF-SUMMARY, then
# "CONF-EXIT <status>" (the suite's exit status), and this payload's own
# verdicts "CONF guest/mount ..." and "CONF guest/umount ...", in the suite's
# format, so that the host counts them like any case.
#
# Harness self-test (run_guest.sh --sabotage): CONF_SABOTAGE_DROP="P LABEL"
# drops that case's line of profile P (a case that did not run);
# CONF_SABOTAGE_BUSY=P keeps P's mount open so that its umount fails (EBUSY).
echo "CONF-GUEST kernel=$(uname -r) profiles=$CONF_PROFILES"
for p in $CONF_PROFILES; do
  mkdir -p "/mnt/$p"
  if ! mount -t virtiofs "$p" "/mnt/$p"; then
    echo "CONF[$p] CONF guest/mount FAIL expected=0 got=mount_failed"
    continue
  fi
  echo "CONF[$p] CONF guest/mount PASS expected=0 got=0"
  drop='^$'
  if [ "${CONF_SABOTAGE_DROP%% *}" = "$p" ]; then drop="^CONF ${CONF_SABOTAGE_DROP#* } "; fi
  {
    /guest/vfsd_conformance run --mode=guest --profile="$p" "/mnt/$p"
    echo "CONF-EXIT $?"
  } 2>&1 | grep -v "$drop" | sed "s/^/CONF[$p] /"
  busy=0
  if [ "${CONF_SABOTAGE_BUSY:-}" = "$p" ]; then
    exec 9<"/mnt/$p" && busy=1
  fi
  if umount "/mnt/$p"; then
    echo "CONF[$p] CONF guest/umount PASS expected=0 got=0"
  else
    echo "CONF[$p] CONF guest/umount FAIL expected=0 got=umount_failed"
  fi
  if [ $busy = 1 ]; then
    exec 9<&-
    umount "/mnt/$p"
  fi
done
echo "CONF-GUEST-DONE"
