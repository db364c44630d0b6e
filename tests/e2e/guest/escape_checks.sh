# Escape attempts against a mounted share, run by busybox sh either in the
# test guest (sourced as its payload by escape_guest.sh) or on the host in a
# chroot jail whose /mnt is the daemon's FUSE mount (run_escape_test.sh). Both
# see the same tree; the host prepared it (run_escape_test.sh says what is
# where) and checks after the run that nothing outside the share was read,
# written or created. Here each attempt prints "ESC <name> PASS|FAIL detail":
# PASS when the attempt got nothing the share does not hold.
#
# Variables (from /escape_env.sh): ESC_M (the mount), ESC_SECRET (the content
# of the files outside the share), ESC_OUTSIDE (the host's absolute path of
# the folder outside), ESC_USER_RUN (runs "sh -c ARG" as uid 1234 gid 2345,
# not in group 4321).

M=$ESC_M
esc() { echo "ESC $*"; }
# PASS unless $2 (what an attempt read) contains the secret.
no_secret() { # name output
  case $2 in
    *"$ESC_SECRET"*) esc "$1" FAIL "read the file outside the share: '$2'" ;;
    *) esc "$1" PASS ;;
  esac
}

# 0. The control: a file in the share reads as the host wrote it, so the
#    tools below work and an empty answer means "refused", not "broken".
if [ "$(cat "$M/control.txt" 2>&1)" = "control $ESC_SECRET" ]; then esc control_read PASS; else
  esc control_read FAIL "share/control.txt read as '$(cat "$M/control.txt" 2>&1)'"; fi

# 1. Symlinks the host put in the share that point outside: the reader's
#    kernel resolves them in its own root, the daemon never follows them.
no_secret abs_symlink_read "$(cat "$M/abs_out" 2>&1)"
no_secret rel_symlink_read "$(cat "$M/rel_out" 2>&1)"
no_secret deep_rel_symlink_read "$(cat "$M/deep/rel_out2" 2>&1)"
echo overwritten >"$M/abs_out" 2>/dev/null
echo overwritten >"$M/rel_out" 2>/dev/null
echo overwritten >"$M/deep/rel_out2" 2>/dev/null
esc symlink_write_attempted PASS "(the host checks the files outside)"
# readlink shows the stored target, unchanged.
t=$(readlink "$M/abs_out")
if [ "$t" = "$ESC_OUTSIDE/secret.txt" ]; then esc symlink_target_kept PASS; else
  esc symlink_target_kept FAIL "readlink gave '$t'"; fi

# 2. ".." at the root of the share, and in a folder the host moved (within
#    the share) while we were inside it.
no_secret dotdot_at_root "$(cat "$M/../outside/secret.txt" 2>&1; cat "$M/../../outside/secret.txt" 2>&1)"
echo escaped >"$M/../escape_dotdot" 2>/dev/null
ls -a "$M/.." >/dev/null 2>&1
cd "$M/mv/a/b" || esc dotdot_after_rename FAIL "cd $M/mv/a/b failed"
echo "ESC-WAIT moved" # the host renames share/mv/a/b to share/moved_b
i=0
while [ ! -e "$M/moved_b" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
out=$(ls -a .. 2>&1; cat ../../outside/secret.txt 2>&1; cat ../../../outside/secret.txt 2>&1)
echo escaped >../../escape_after_rename 2>/dev/null
cd /
case $out in
  *"$ESC_SECRET"*) esc dotdot_after_rename FAIL "read outside: $out" ;;
  *) esc dotdot_after_rename PASS ;;
esac

# 3. Names the guest cannot even send whole ('/' splits them; the raw-byte
#    tests send them): the kernel walks the components inside the share.
no_secret slash_name "$(cat "$M/deep/../../outside/secret.txt" 2>&1)"

# 4. FUSE_SYMLINK with an absolute target, then opened, read and written.
ln -s "$ESC_OUTSIDE/secret.txt" "$M/guest_abs" 2>/dev/null
ln -s "../outside/secret.txt" "$M/guest_rel" 2>/dev/null
ln -s "/" "$M/guest_root" 2>/dev/null
no_secret guest_symlink_read "$(cat "$M/guest_abs" 2>&1; cat "$M/guest_rel" 2>&1;
  cat "$M/guest_root$ESC_OUTSIDE/secret.txt" 2>&1)"
echo overwritten >"$M/guest_abs" 2>/dev/null
echo created >"$M/guest_root/escape_guest_root" 2>/dev/null
esc guest_symlink_write_attempted PASS

# 5. A hard link the host made to a file outside: it is in the share (the
#    host put it there), so reading it is the host's choice; linking it again
#    stays in the share, and it leads nowhere else.
if [ "$(cat "$M/hl_out" 2>&1)" = "linked" ] && ln "$M/hl_out" "$M/hl_again" 2>/dev/null; then
  esc host_hardlink PASS
else
  esc host_hardlink FAIL "the host's hard link did not read as 'linked' or could not be linked again"
fi
ln "$M/hl_out" /tmp/hl_cross 2>/dev/null && esc hardlink_cross_mount FAIL "linked across mounts" ||
  esc hardlink_cross_mount PASS

# 6. /proc/self/fd/N style names: they are looked up in the share, not in the
#    daemon's /proc.
out=""
for n in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 20 30 40 50 64 100; do
  out="$out$(cat "$M/proc/self/fd/$n" 2>&1)$(cat "$M/$n" 2>&1)"
done
no_secret proc_fd_names "$out"
mkdir -p "$M/proc/self/fd" 2>/dev/null && echo x >"$M/proc/self/fd/3" 2>/dev/null
esc proc_fd_write_attempted PASS

# 7. Device nodes and FIFOs made by the guest, then opened: a node is opened
#    by the reader's kernel (the host mount is nodev), never by the daemon.
mknod "$M/dev_zero" c 1 5 2>/dev/null
mknod "$M/dev_mem" c 1 1 2>/dev/null
mknod "$M/dev_sda" b 8 0 2>/dev/null
mkfifo "$M/fifo" 2>/dev/null
head -c 16 "$M/dev_mem" >/dev/null 2>&1
head -c 16 "$M/dev_sda" >/dev/null 2>&1
(echo through-fifo >"$M/fifo") 2>/dev/null &
w=$!
got=$(timeout 10 cat "$M/fifo" 2>/dev/null)
kill $w 2>/dev/null
wait $w 2>/dev/null
if [ -c "$M/dev_zero" ] && [ -p "$M/fifo" ]; then esc special_nodes PASS "fifo read '$got'"; else
  esc special_nodes FAIL "mknod/mkfifo did not make the nodes"; fi

# 8. A setgid folder (group 4321) and a user who is not in that group: what
#    the user makes inherits the group, but never keeps a setgid bit.
out=$($ESC_USER_RUN "echo user >$M/sgid/ufile; chmod 2755 $M/sgid/ufile; mkdir $M/sgid/udir;
  echo x >$M/sgid/udir/deeper; chmod g+s $M/sgid/ufile; id -u" 2>&1)
esc sgid_user_ran PASS "$out"
out=$($ESC_USER_RUN "cat $M/abs_out; cat $M/rel_out; cat $M/guest_abs; cat $M/../outside/secret.txt" 2>&1)
no_secret user_reads "$out"

esc done PASS
