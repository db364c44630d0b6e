#!/usr/bin/env bash
# Protocol-level benchmark: virtiofsd-cpp, the Rust virtiofsd 1.13 and QEMU
# 7.2's C virtiofsd, each driven over vhost-user by bench/vhost_load (no VM),
# interleaved workload by workload for --rounds rounds; prints the median of
# each cell and our ratio to each peer.
#
#   bench/run_protocol.sh [--build DIR] [--rounds N] [--seconds S]
#                         [--workloads "getattr lookup ..."] [--depths "1 16"]
#
# Every daemon runs as a launcher would start it (sandbox and seccomp on, its
# default cache policy), one fresh daemon per measurement.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
rounds=3
seconds=3
workloads="getattr lookup lookup-miss read-4k write-4k read-1m"
depths="1 16"
while [[ $# -gt 0 ]]; do
  case $1 in
    --build) build=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --workloads) workloads=$2; shift 2 ;;
    --depths) depths=$2; shift 2 ;;
    *) echo "usage: $0 [--build DIR] [--rounds N] [--seconds S] [--workloads LIST] [--depths LIST]" >&2; exit 2 ;;
  esac
done
load=$build/bench/vhost_load
[[ -x $load ]] || { echo "no $load: build the vhost_load target" >&2; exit 1; }

rust_dir=$root/.cache/rust-virtiofsd
declare -A cmd
cmd[ours]="$build/virtiofsd --socket-path=SOCK --shared-dir=DIR"
if [[ -x $rust_dir/usr/libexec/virtiofsd ]]; then
  cmd[rust]="$rust_dir/lib64/ld-linux-x86-64.so.2 --library-path $rust_dir/lib/x86_64-linux-gnu:$rust_dir/usr/lib/x86_64-linux-gnu $rust_dir/usr/libexec/virtiofsd --socket-path=SOCK --shared-dir=DIR"
fi
if [[ -x /usr/lib/qemu/virtiofsd ]]; then
  cmd[c]="/usr/lib/qemu/virtiofsd --socket-path=SOCK -o source=DIR"
fi
daemons=(ours)
[[ -n ${cmd[rust]:-} ]] && daemons+=(rust)
[[ -n ${cmd[c]:-} ]] && daemons+=(c)

work=$(mktemp -d /tmp/vfsd-bench.XXXXXX)
trap 'pkill -f "$work/sock" 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -p "$work/share"
head -c $((4 << 20)) /dev/urandom > "$work/share/f"
results=$work/results
: > "$results"

# measure DAEMON WORKLOAD DEPTH: one fresh daemon, one vhost_load run.
measure() {
  local daemon=$1 workload=$2 depth=$3 sock=$work/sock line pid
  rm -f "$sock"
  local c=${cmd[$daemon]//SOCK/$sock}
  c=${c//DIR/$work/share}
  $c > "$work/$daemon.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do [[ -S $sock ]] && break; sleep 0.05; done
  if line=$("$load" --socket "$sock" --workload "$workload" --depth "$depth" \
      --seconds "$seconds" --daemon-pid "$pid" 2>>"$work/$daemon.log"); then
    echo "$daemon $line" >> "$results"
  else
    echo "$daemon $workload $depth failed (see below)" >&2
    tail -3 "$work/$daemon.log" >&2
  fi
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

for round in $(seq "$rounds"); do
  for workload in $workloads; do
    for depth in $depths; do
      for daemon in "${daemons[@]}"; do
        measure "$daemon" "$workload" "$depth"
      done
    done
  done
  echo "round $round done" >&2
done

python3 - "$results" "${daemons[@]}" <<'EOF'
import sys, statistics, collections
path, daemons = sys.argv[1], sys.argv[2:]
cells = collections.defaultdict(list)
order = []
for line in open(path):
    d, w, depth, ops, p50, p99, cpu, errors = line.split()
    key = (w, int(depth))
    if key not in order: order.append(key)
    cells[(d, key)].append((float(ops), float(p50), float(p99), float(cpu), int(errors)))
def med(d, key, i):
    v = [c[i] for c in cells.get((d, key), [])]
    return statistics.median(v) if v else float('nan')
head = f"{'workload':12s} {'depth':>5s} " + " ".join(f"{d + ' ops/s':>12s}" for d in daemons)
head += " " + " ".join(f"{'vs ' + d:>8s}" for d in daemons[1:])
head += " " + " ".join(f"{d + ' us/op cpu':>15s}" for d in daemons) + "  errors"
print(head)
for key in order:
    ops = [med(d, key, 0) for d in daemons]
    row = f"{key[0]:12s} {key[1]:5d} " + " ".join(f"{o:12.0f}" for o in ops)
    row += " " + " ".join(f"{ops[0] / o:8.2f}" for o in ops[1:])
    row += " " + " ".join(f"{med(d, key, 3):15.2f}" for d in daemons)
    row += "  " + ",".join(str(sum(c[4] for c in cells.get((d, key), []))) for d in daemons)
    print(row)
EOF
