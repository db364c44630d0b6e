#!/usr/bin/env bash
# Protocol-level benchmark: virtiofsd-cpp, the Rust virtiofsd 1.13 and QEMU
# 7.2's C virtiofsd, each driven over vhost-user by bench/vhost_load (no VM),
# interleaved workload by workload for --rounds rounds, next to the host's
# own syscall rate for the same operation (bench/host_limit); prints the
# median of each cell and our ratio to each peer and to the limit.
#
#   bench/run_protocol.sh [--build DIR] [--rounds N] [--seconds S]
#                         [--workloads "getattr lookup ..."] [--depths "1 16 64"]
#                         [--queues "1 2 4"] [--wait block|poll]
#                         [--peers "rust c"] [--ours-args "ARGS"]
#                         [--workdir-base DIR]
#
# --ours-args appends options to our daemon's command line (for example
# "--thread-pool-size=0" or "--inode-file-handles=prefer"), to measure one
# setting against the peers; --peers picks the peers (ours always runs);
# --peers "" measures ours alone. --workdir-base puts the shared folder and
# the sockets in a fresh folder under DIR (default /tmp): with /dev/shm the
# host filesystem's own quirks stay out of the table (this machine's ext4,
# without a journal, waits 30 s before it reuses a deleted inode, which
# slows whichever daemon's create row runs right after another's).
#
# Every daemon runs as a launcher would start it (sandbox and seccomp on, its
# default cache policy), one fresh daemon per measurement. A daemon that
# offers fewer request queues than a --queues value gets a "—" cell.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
rounds=3
seconds=3
workloads="getattr lookup lookup-miss open create read-4k write-4k read-1m readdirplus"
depths="1 16 64"
queues="1"
wait_mode=block
peers="rust c"
ours_args=
workdir_base=/tmp
usage="usage: $0 [--build DIR] [--rounds N] [--seconds S] [--workloads LIST] [--depths LIST] [--queues LIST] [--wait block|poll] [--peers LIST] [--ours-args ARGS] [--workdir-base DIR]"
while [[ $# -gt 0 ]]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --workloads) workloads=$2; shift 2 ;;
    --depths) depths=$2; shift 2 ;;
    --queues) queues=$2; shift 2 ;;
    --wait) wait_mode=$2; shift 2 ;;
    --peers) peers=$2; shift 2 ;;
    --ours-args) ours_args=$2; shift 2 ;;
    --workdir-base) workdir_base=$2; shift 2 ;;
    *) echo "$usage" >&2; exit 2 ;;
  esac
done
[[ $wait_mode == block || $wait_mode == poll ]] || { echo "$usage" >&2; exit 2; }
load=$build/bench/vhost_load
limit=$build/bench/host_limit
[[ -x $load ]] || { echo "no $load: build the vhost_load target" >&2; exit 1; }
[[ -x $limit ]] || limit=  # the limit column stays empty without the host_limit target

rust_dir=$root/.cache/rust-virtiofsd
declare -A cmd
cmd[ours]="$build/virtiofsd --socket-path=SOCK --shared-dir=DIR${ours_args:+ $ours_args}"
if [[ -x $rust_dir/usr/libexec/virtiofsd ]]; then
  cmd[rust]="$rust_dir/lib64/ld-linux-x86-64.so.2 --library-path $rust_dir/lib/x86_64-linux-gnu:$rust_dir/usr/lib/x86_64-linux-gnu $rust_dir/usr/libexec/virtiofsd --socket-path=SOCK --shared-dir=DIR"
fi
if [[ -x /usr/lib/qemu/virtiofsd ]]; then
  cmd[c]="/usr/lib/qemu/virtiofsd --socket-path=SOCK -o source=DIR"
fi
daemons=(ours)
for d in $peers; do
  [[ $d == rust || $d == c ]] || { echo "$usage" >&2; exit 2; }
  # A peer that is not installed is left out, as before --peers existed.
  [[ -n ${cmd[$d]:-} ]] && daemons+=("$d")
done
[[ -n $ours_args ]] && echo "ours runs with: $ours_args" >&2

# A daemon and the processes it forked (its sandbox), by pid.
tree_pids() {
  local p=$1 c
  echo "$p"
  # shellcheck disable=SC2013  # the file holds space-separated pids
  for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do tree_pids "$c"; done
}
daemon_pid=
stop_daemon() {
  [[ -n $daemon_pid ]] || return 0
  local pids
  pids=$(tree_pids "$daemon_pid")
  # shellcheck disable=SC2086
  kill $pids 2>/dev/null || true
  wait "$daemon_pid" 2>/dev/null || true
  daemon_pid=
}

work=$(mktemp -d "$workdir_base"/vfsd-bench.XXXXXX)
trap 'stop_daemon; rm -rf "$work"' EXIT
mkdir -p "$work/share/d"
head -c $((4 << 20)) /dev/urandom > "$work/share/f"
# The readdirplus folder: 10 000 empty files.
python3 -c 'import os, sys
for i in range(10000): open(os.path.join(sys.argv[1], "e-%05d" % i), "w").close()' "$work/share/d"
results=$work/results
: > "$results"

# measure DAEMON WORKLOAD DEPTH QUEUES: one fresh daemon, one vhost_load run.
measure() {
  local daemon=$1 workload=$2 depth=$3 nq=$4 sock=$work/sock line rc
  rm -f "$sock"
  local c=${cmd[$daemon]//SOCK/$sock}
  c=${c//DIR/$work/share}
  $c > "$work/$daemon.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done
  rc=0
  line=$("$load" --socket "$sock" --workload "$workload" --depth "$depth" --queues "$nq" \
      --wait "$wait_mode" --seconds "$seconds" --daemon-pid "$daemon_pid" \
      2>>"$work/$daemon.log") || rc=$?
  if [[ $rc == 0 ]]; then
    echo "$daemon $line" >> "$results"
  elif [[ $rc == 3 ]]; then  # too few request queues: a "—" cell
    echo "$daemon $workload $depth $nq $wait_mode NA" >> "$results"
  else
    echo "$daemon $workload $depth q$nq failed (see below)" >&2
    tail -3 "$work/$daemon.log" >&2
  fi
  stop_daemon
}

for round in $(seq "$rounds"); do
  for workload in $workloads; do
    if [[ -n $limit ]]; then
      if line=$("$limit" --dir "$work/share" --workload "$workload" --seconds "$seconds"); then
        echo "limit $line" >> "$results"
      else
        echo "host_limit $workload failed" >&2
      fi
    fi
    for nq in $queues; do
      for depth in $depths; do
        for daemon in "${daemons[@]}"; do
          measure "$daemon" "$workload" "$depth" "$nq"
        done
      done
    done
  done
  echo "round $round done" >&2
done

python3 - "$results" "$wait_mode" "${daemons[@]}" <<'EOF'
import sys, statistics, collections
path, mode, daemons = sys.argv[1], sys.argv[2], sys.argv[3:]
cells = collections.defaultdict(list)
limits = collections.defaultdict(list)
order = []
for line in open(path):
    f = line.split()
    d, w = f[0], f[1]
    if d == 'limit':
        limits[w].append(float(f[5]))
        continue
    key = (w, int(f[2]), int(f[3]))
    if key not in order: order.append(key)
    if f[5] == 'NA':
        cells[(d, key)].append(None)
    else:
        cells[(d, key)].append((float(f[5]), float(f[6]), float(f[7]), float(f[8]), int(f[9])))
def med(d, key, i):
    v = [c[i] for c in cells.get((d, key), []) if c is not None]
    return statistics.median(v) if v else None
def num(v, width, fmt):
    if fmt == '.0f' and v is not None and v < 100: fmt = '.2f'
    return f"{'—' if v is None else format(v, fmt):>{width}s}"
def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b
print(f"wait mode: {mode}; ops/s summed over the queues; cpu: the daemon's CPU µs per operation")
head = f"{'workload':12s} {'depth':>5s} {'queues':>6s} " + " ".join(f"{d + ' ops/s':>12s}" for d in daemons)
head += f" {'limit ops/s':>12s} " + " ".join(f"{'ours/' + d:>9s}" for d in daemons[1:] + ['limit'])
head += " " + " ".join(f"{d + ' us/op cpu':>15s}" for d in daemons) + "  errors"
print(head)
for key in order:
    ops = [med(d, key, 0) for d in daemons]
    lim = statistics.median(limits[key[0]]) if limits.get(key[0]) else None
    row = f"{key[0]:12s} {key[1]:5d} {key[2]:6d} " + " ".join(num(o, 12, '.0f') for o in ops)
    row += " " + num(lim, 12, '.0f') + " "
    row += " ".join(num(ratio(ops[0], o), 9, '.2f') for o in ops[1:] + [lim])
    row += " " + " ".join(num(med(d, key, 3), 15, '.2f') for d in daemons)
    row += "  " + ",".join(str(sum(c[4] for c in cells.get((d, key), []) if c is not None)) for d in daemons)
    print(row)
rd = [k for k in order if k[0] == 'readdirplus']
if rd:
    print("\nreaddirplus entries/s (ops/s x 10000 entries):")
    for key in rd:
        vals = [med(d, key, 0) for d in daemons]
        lim = statistics.median(limits['readdirplus']) if limits.get('readdirplus') else None
        print(f"  depth {key[1]:3d} queues {key[2]}: " + "  ".join(
            f"{d} {num(None if v is None else v * 10000, 1, '.0f')}" for d, v in zip(daemons + ['limit'], vals + [lim])))
EOF
