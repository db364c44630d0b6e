# The multi-queue test's guest side (sourced by the init, busybox sh): one
# writer pinned to each vCPU, so that a guest that maps its vCPUs to
# different request queues (Linux >= 6.11) sends each writer's requests down
# its own queue. The host counts what each queue carried.
M=/mnt
FILES=150
mark() { # name PASS|FAIL detail...
  n=$1 r=$2
  shift 2
  echo "E2E $n $r $*"
}

if ! vfsd_mount "$M" || ! grep -q " $M virtiofs " /proc/mounts; then
  mark mount FAIL "mount -t virtiofs ${vfsdtag:-share} $M failed"
  return 0 2>/dev/null || exit 0
fi
cpus=$(nproc)
mark mount PASS "cpus=$cpus kernel=$(uname -r) uptime_cs=$(uptime_cs)"

# CREATE, WRITE, FLUSH and RELEASE for each file, from the pinned CPU.
c=0
while [ "$c" -lt "$cpus" ]; do
  mkdir -p "$M/mq/cpu$c"
  taskset -c "$c" sh -c "i=0; while [ \$i -lt $FILES ]; do echo cpu$c-\$i >$M/mq/cpu$c/f\$i; i=\$((i + 1)); done" &
  c=$((c + 1))
done
wait
bad=""
c=0
while [ "$c" -lt "$cpus" ]; do
  i=0
  while [ "$i" -lt "$FILES" ]; do
    [ "$(cat "$M/mq/cpu$c/f$i" 2>/dev/null)" = "cpu$c-$i" ] || bad="$bad cpu$c/f$i"
    i=$((i + 1))
  done
  c=$((c + 1))
done
if [ -z "$bad" ]; then
  mark pinned_writes PASS "$cpus writers x $FILES files read back"
else
  mark pinned_writes FAIL "wrong or missing:$(echo "$bad" | cut -c1-200)"
fi
sync
echo "E2E-MQ-WRITTEN"
# The host reads the daemon's per-queue counters now, then creates
# mq/scraped; wait for it (bounded) so the daemon still runs while it reads.
i=0
while [ ! -e "$M/mq/scraped" ] && [ "$i" -lt 120 ]; do
  sleep 0.5
  i=$((i + 1))
done
[ -e "$M/mq/scraped" ] || mark host_scraped FAIL "the host did not create mq/scraped within 60 s"
umount "$M" && mark umount PASS || mark umount FAIL "umount $M"
