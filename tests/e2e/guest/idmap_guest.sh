# Guest payload of run_idmap_test.sh (sourced by the init, busybox sh): the
# daemon runs as an unprivileged host user and squashes every guest id onto
# its own, shown to the guest as e2euser (1234:2345). Prints
# "IDMAP <check> PASS|FAIL <detail>" lines.
M=/mnt
idmap() { echo "IDMAP $1 $2 ${3:-}"; }
owner() { stat -c '%u:%g' "$1" 2>&1; }
if vfsd_mount "$M"; then
  idmap mount PASS
  o=$(owner "$M/hostfile")
  [ "$o" = 1234:2345 ] && idmap host_owner_seen_as_guest PASS || idmap host_owner_seen_as_guest FAIL "$o"
  if su -s /bin/sh e2euser -c "echo user >$M/userfile && mkdir $M/userdir" 2>/tmp/err; then
    o="$(owner "$M/userfile") $(owner "$M/userdir")"
    [ "$o" = "1234:2345 1234:2345" ] && idmap user_creates PASS || idmap user_creates FAIL "$o"
  else
    idmap user_creates FAIL "$(cat /tmp/err)"
  fi
  if echo root >"$M/rootfile" 2>/tmp/err; then
    o=$(owner "$M/rootfile")
    [ "$o" = 1234:2345 ] && idmap root_creates PASS || idmap root_creates FAIL "$o"
  else
    idmap root_creates FAIL "$(cat /tmp/err)"
  fi
  # forbid-guest:70000:1
  if chown 70000 "$M/rootfile" 2>/tmp/err; then
    idmap forbidden_chown FAIL "chown to 70000 succeeded"
  else
    grep -q "not permitted" /tmp/err && idmap forbidden_chown PASS || idmap forbidden_chown FAIL "$(cat /tmp/err)"
  fi
  if chown 1234:2345 "$M/rootfile" 2>/tmp/err; then
    idmap chown_to_guest_owner PASS
  else
    idmap chown_to_guest_owner FAIL "$(cat /tmp/err)"
  fi
  sync
  umount "$M" && idmap umount PASS || idmap umount FAIL
else
  idmap mount FAIL "mount -t virtiofs ${vfsdtag:-share} $M failed"
fi
