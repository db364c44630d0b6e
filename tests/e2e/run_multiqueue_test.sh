#!/usr/bin/env bash
# End-to-end test of several request queues: a guest with two vCPUs and a
# virtio-fs device of N request queues (num-request-queues=N) spreads its
# requests over them, and our daemon serves each queue.
#
#   run_multiqueue_test.sh [--binary PATH] [--queues N] [--sabotage]
#                          [--timeout SECONDS] [--keep] [--verbose]
#
# The guest is Debian 12's linux-image-6.12 (Linux >= 6.11 maps vCPUs to
# request queues; 6.1 uses only the first). It pins one writer to each vCPU
# (150 files each: CREATE, WRITE, FLUSH, RELEASE), reads the files back and
# prints E2E-MQ-WRITTEN; the host then reads virtiofsd_queue_requests_total
# from the daemon's --metrics-socket and lets the guest go on.
#
# Checks: at least two request queues carried at least 150 requests each
# (one writer's worth), no request reached a queue past N, the host sees
# every file with its content, and the guest's kernel log is clean.
#
# --sabotage offers a single request queue (num-request-queues=1): the run
# must FAIL, and prints "E2E MQ SABOTAGE DETECTED" when exactly the
# spreading check failed.
#
# Exit status: 0 pass, 1 a check failed, 2 usage/setup error.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

binary="$VFSD_ROOT/build/virtiofsd" sabotage=0 limit=240 keep=0 queues=2
vfsd_e2e_args 2,21 "queues" "" "$@"
if ! [[ $queues =~ ^[0-9]+$ ]] || ((queues < 2 || queues > 16)); then
  echo "--queues must be 2..16 (ours offers 16)" >&2
  exit 2
fi
export VFSD_KERNEL_ROOT=${VFSD_KERNEL_ROOT:-$VFSD_ROOT/.cache/kernel-6.12/root}
vfsd_need_binary "$binary"
vfsd_need_guest
command -v python3 >/dev/null || { echo "python3 is needed to read the metrics socket" >&2; exit 2; }

vfsd_work_dir multiqueue
share=$work/share
mkdir -p "$share/mq"
vfsd_build_initramfs "$work/initrd" "$HERE/guest/multiqueue_checks.sh"
cpus=2 files=150
offered=$queues
((sabotage)) && offered=1

declare -A result detail
order=()
# The daemon's per-queue counters, "QUEUE COUNT" lines, from its metrics socket.
scrape_queues() {
  python3 - "$work/metrics.sock" <<'PY'
import re, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
s.shutdown(socket.SHUT_WR)
data = b""
while chunk := s.recv(65536):
    data += chunk
for q, n in re.findall(rb'^virtiofsd_queue_requests_total\{queue="(\d+)"\} (\d+)$', data, re.M):
    print(q.decode(), n.decode())
PY
}

if ((sabotage)); then
  echo "== e2e multi-queue, $queues queues (SABOTAGE run offering 1 request queue: must FAIL)"
else
  echo "== e2e multi-queue: $cpus vCPUs, $queues request queues"
fi
VFSD_DAEMON_ARGS="--metrics-socket=$work/metrics.sock ${VFSD_DAEMON_ARGS:-}" \
  vfsd_start_daemon ours "$work/vhost.sock" "$share" "$work/daemon.log" "$binary" || exit 1
t0=$EPOCHREALTIME
rc=0
VFSD_GUEST_CPUS=$cpus VFSD_NUM_REQUEST_QUEUES=$offered \
  vfsd_boot_guest "$work/vhost.sock" "$work/initrd" "$work/console.log" "$limit" &
guest_bg=$!
vfsd_e2e_cleanup() { kill "$guest_bg" 2>/dev/null || true; }
counts=""
if vfsd_wait_for "$limit" grep -qs 'E2E-MQ-WRITTEN' "$work/console.log"; then
  counts=$(scrape_queues 2>"$work/scrape.err") || counts=""
  [[ -n $counts ]] || echo "scrape failed: $(head -c 300 "$work/scrape.err")" >&2
fi
touch "$share/mq/scraped"
wait "$guest_bg" || rc=$?
t_done=$EPOCHREALTIME
while read -r _ name res rest; do vfsd_record "$name" "$res" "$rest"; done \
  < <(vfsd_console_lines "$work/console.log" 'E2E [a-z_0-9]* \(PASS\|FAIL\)')
for n in mount pinned_writes umount; do
  [[ -v "result[$n]" ]] || vfsd_record "$n" FAIL "marker missing from the guest's console"
done
vfsd_check guest_finished "QEMU exited with status $rc" test "$rc" = 0
vfsd_check guest_cpus "the guest saw '${detail[mount]:-}', expected cpus=$cpus" \
  grep -q "cpus=$cpus " <<<"${detail[mount]:-}"

# Request queues are vring 1 and up; 0 is the high-priority queue.
busy=0 beyond=0 seen=""
while read -r q n; do
  [[ -n $q ]] || continue
  seen+=" q$q=$n"
  ((q >= 1 && n >= files)) && ((++busy))
  ((q > offered)) && ((++beyond))
done <<<"$counts"
if [[ -n $counts ]]; then
  vfsd_record metrics_scraped PASS "requests per vring:$seen"
else
  vfsd_record metrics_scraped FAIL "no virtiofsd_queue_requests_total from $work/metrics.sock"
fi
vfsd_check queues_spread "request queues with >= $files requests: $busy (want >= 2);$seen" \
  test "$busy" -ge 2
vfsd_check no_queue_beyond_offered "$beyond queue(s) past the $offered offered got requests;$seen" \
  test "$beyond" = 0
host_bad=0
for ((c = 0; c < cpus; c++)); do
  for ((i = 0; i < files; i++)); do
    [[ $(cat "$share/mq/cpu$c/f$i" 2>/dev/null) == "cpu$c-$i" ]] || ((++host_bad))
  done
done
vfsd_check host_files "$host_bad of $((cpus * files)) files missing or wrong on the host" test "$host_bad" = 0
while read -r name res rest; do vfsd_record "$name" "$res" "$rest"; done \
  < <(vfsd_kernel_checks "$work/console.log" 1)
vfsd_stop_daemon 10 || true
sanitizer=$(vfsd_sanitizer_reports "$work/daemon.log" || true)
vfsd_check daemon_sanitizers "sanitizer reports: $(head -n 1 <<<"$sanitizer")" test -z "$sanitizer"
elapsed=$(awk -v a="$t0" -v b="$t_done" 'BEGIN{printf "%.1f", b-a}')

vfsd_report_checks 26
echo "   (guest ${elapsed}s; ${#order[@]} checks)"
if ((${#failed[@]})); then
  echo "E2E RESULT: FAIL (${#failed[@]} failed: ${failed[*]})"
  echo "--- last console lines ---"
  vfsd_console_tail "$work/console.log" 15 '^[0-9.]* (E2E|VFSD-KMSG)'
  echo "--- daemon log (last 25 lines) ---"
  tail -n 25 "$work/daemon.log"
  if ((sabotage)); then
    if [[ ${failed[*]} == queues_spread ]]; then
      echo "E2E MQ SABOTAGE DETECTED: with one request queue only the spreading check failed"
    else
      echo "E2E MQ SABOTAGE: unexpected set of failures"
      keep=1
    fi
  fi
  ((sabotage)) || keep=1
  exit 1
fi
echo "E2E RESULT: PASS"
((sabotage)) && echo "E2E MQ SABOTAGE NOT DETECTED: the harness passed a sabotaged run"
exit 0
