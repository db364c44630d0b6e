#!/usr/bin/env bash
# Guest-level benchmark: virtiofsd-cpp, the Rust virtiofsd 1.13 and QEMU 7.2's
# C virtiofsd serving the test guest (QEMU TCG, 1 vCPU, 512 MiB). Interleaved
# workload by workload: each round runs every workload on every daemon, one
# fresh daemon and one fresh guest boot per measurement (so every run starts
# with cold guest caches; a boot costs ~3 s under TCG, which is why the boot
# is per workload and not per request). Prints one table: the median over the
# rounds of each cell, and our ratio to each peer oriented so that >1 means
# ours is better. A benchmark, not a test: it never fails on numbers.
#
#   bench/run_guest.sh [--rounds N] [--daemons=ours,rust,c] [--workloads LIST]
#                      [--binary PATH] [--seconds S] [--fio-mib N] [--engine E]
#                      [--cpus N] [--queues N] [--timeout S] [--workdir-base DIR]
#                      [--keep] [--verbose]
#   bench/run_guest.sh --memory [--modes never,prefer,mandatory] [--mem-dirs N]
#                      [--daemons=...]
#
# LIST: words or commas; "default" (the list below), "all" (default plus the
# extras mount cp-file find-2000 du-2000 rand-write-4k-qd16-4j seq-read-1m-4j
# seq-write-1m-4j), or workload names:
#   rand-read-4k-qd1 rand-read-4k-qd16 rand-read-4k-qd16-4j   fio, IOPS
#   rand-write-4k-qd1 rand-write-4k-qd16                      fio, IOPS
#   seq-read-1m seq-write-1m                                  fio, MiB/s
#   create-1000 ls-l-1000 neg-lookup-2000 rm-rf-2000 untar-2000   per second
# fio runs time-based (--seconds, default 10, after 1 s of ramp) with
# O_DIRECT on a --fio-mib (default 128) MiB file the host wrote into the share
# beforehand; queue depth 1 uses psync, deeper queues --engine (libaio, the
# default: FUSE serves O_DIRECT AIO asynchronously, so 16 requests are in
# flight; io_uring: the 6.1 guest punts FUSE files to at most 4 blocking
# io-wq workers per vCPU); -4j is four jobs. fio is a static build
# (scripts/fetch-fio.sh, run on demand).
# Metadata: create-1000 creates 1000 empty files; ls-l-1000 lists a folder of
# 1000 host-made files after dropping the guest's caches; neg-lookup-2000
# stat()s 2000 distinct missing names; rm-rf-2000 removes a host-made tree
# of 2000 files in 40 folders; untar-2000 unpacks 2000 small files (a tarball
# made once per run on the host) and syncs. All are shell builtins or one
# busybox process, so no fork per file is timed.
# --cpus N gives the guest N vCPUs (default 1); --queues N makes the device
# offer N request queues (num-request-queues; default QEMU's 1). A guest from
# Linux 6.11 (VFSD_KERNEL_ROOT=.cache/kernel-6.12/root) maps its vCPUs to
# them; only ours serves more than one.
#
# --memory: resident memory and open fds of each daemon after the guest
# looked up 100 000 files (find over a host tree of --mem-dirs, default 100,
# folders x 1000 empty files, made once in .cache/guest-bench), one row per
# daemon and
# --inode-file-handles mode (the C daemon has no such option: one row). The
# host samples the daemon's process tree (VmRSS and /proc/PID/fd, summed)
# after the mount and again after the find, while the guest waits; bytes per
# inode = (RSS after find - RSS after mount) / entries found. A daemon that
# keeps an O_PATH fd per inode ("never", the C daemon) needs RLIMIT_NOFILE
# above the entry count; where the hard limit is lower and cannot be raised
# (no CAP_SYS_RESOURCE), its find stops short: see the entries column.
#
# --workdir-base DIR puts the work folder, and so every share, in a fresh
# folder under DIR (default $TMPDIR or /tmp). /dev/shm keeps the host
# filesystem's quirks out of the metadata rows: ext4 without a journal (this
# machine's) skips, on every inode allocation, each inode deleted in the last
# 30 s, reading its inode table block to tell. After one run's share is
# emptied, the next daemon's creates cost 150-300 us instead of 7 us on the
# host, whichever daemon it is.
#
# Every daemon runs as tests/e2e/lib.sh starts it for the e2e tests: ours
# with its defaults (namespace sandbox, cache auto, file handles "prefer"),
# Rust and C with cache auto and the chroot sandbox (Rust's default for file
# handles is "never").
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../tests/e2e/lib.sh
source "$HERE/../tests/e2e/lib.sh"

default_workloads="rand-read-4k-qd1 rand-read-4k-qd16 rand-read-4k-qd16-4j rand-write-4k-qd1
  rand-write-4k-qd16 seq-read-1m seq-write-1m create-1000 ls-l-1000 neg-lookup-2000 rm-rf-2000
  untar-2000"
extra_workloads="rand-write-4k-qd16-4j seq-read-1m-4j seq-write-1m-4j cp-file find-2000 du-2000 mount"
binary=$VFSD_ROOT/build/virtiofsd limit=300 rounds=3 daemons=ours,rust,c
workloads=default seconds=10 fio_mib=128 memory=0 modes=never,prefer,mandatory engine=libaio
mem_dirs=100 cpus=1 queues="" workdir_base=${TMPDIR:-/tmp}
vfsd_e2e_args 2,66 "rounds daemons workloads seconds fio-mib modes engine mem-dirs cpus queues workdir-base" "memory" "$@"
[[ -d $workdir_base ]] || { echo "--workdir-base $workdir_base: no such folder" >&2; exit 2; }
export VFSD_GUEST_CPUS=$cpus VFSD_NUM_REQUEST_QUEUES=$queues
vfsd_need_guest
# find over 100 000 entries takes minutes under TCG
((memory)) && [[ $limit == 300 ]] && limit=900

# ---- which daemons ------------------------------------------------------------
IFS=', ' read -ra want <<<"$daemons"
list=()
for d in "${want[@]}"; do
  case $d in
    ours) [[ -x $binary ]] || { echo "skip ours: $binary not built (--binary PATH)" >&2; continue; } ;;
    c) [[ -x $VFSD_C_DAEMON ]] || { echo "skip c: $VFSD_C_DAEMON missing" >&2; continue; } ;;
    rust) vfsd_rust_command >/dev/null || { echo "skip rust: run scripts/fetch-rust-virtiofsd.sh" >&2; continue; } ;;
    *) echo "unknown daemon '$d' (ours, rust, c)" >&2; exit 2 ;;
  esac
  list+=("$d")
done
((${#list[@]})) || { echo "no daemon to run" >&2; exit 1; }

workloads=${workloads//,/ }
workloads=${workloads//default/$default_workloads}
workloads=${workloads//all/$default_workloads $extra_workloads}
read -ra wl <<<"${workloads//$'\n'/ }"

# unit and direction of a workload's number: "IOPS up" means higher is better
unit_of() {
  case $1 in
    rand-*) echo IOPS ;;
    seq-* | cp-file) echo MiB/s ;;
    mount) echo "s-down" ;;
    create-*) echo files/s ;;
    ls-l-* | find-* | du-*) echo entries/s ;;
    neg-lookup-*) echo lookups/s ;;
    rm-rf-* | untar-*) echo files/s ;;
    *) return 1 ;;
  esac
}
if ((!memory)); then
  for w in "${wl[@]}"; do unit_of "$w" >/dev/null || { echo "unknown workload '$w'" >&2; exit 2; }; done
fi

TMPDIR=$workdir_base vfsd_work_dir guest-bench
cache=$VFSD_ROOT/.cache/guest-bench
mkdir -p "$cache"
vfsd_e2e_cleanup() {
  [[ -n ${boot_pid:-} ]] && kill "$boot_pid" 2>/dev/null
  return 0
}

# what the workloads need: fio (static), the small-file tarball, a 2000-file tree
fio_bin=$VFSD_ROOT/.cache/fio/fio
need_fio=0
for w in "${wl[@]}"; do [[ $w == rand-* || $w == seq-* ]] && need_fio=1; done
if ((need_fio && !memory)) && ! { [[ -x $fio_bin ]] && "$fio_bin" --enghelp 2>/dev/null | grep -qw "$engine"; }; then
  echo "building a static fio (scripts/fetch-fio.sh; once)" >&2
  "$VFSD_ROOT/scripts/fetch-fio.sh" >&2
fi
# (made once in .cache/guest-bench, shell builtins only: no process per file)
if [[ ! -f $cache/small/.done ]]; then
  rm -rf "$cache/small" && mkdir -p "$cache/small/tree" "$cache/small/ls"
  a=$(head -c 4100 /dev/zero | tr '\0' a)
  for ((i = 0; i < 2000; i++)); do
    d=$cache/small/tree/dir$((i % 40))
    [[ -d $d ]] || mkdir "$d"
    printf '%s' "${a:0:100 + (i * 7919) % 4000}" >"$d/file$i.txt"
  done
  tar cf "$cache/small/small.tar" -C "$cache/small/tree" .
  for ((i = 0; i < 1000; i++)); do : >"$cache/small/ls/f$i"; done
  touch "$cache/small/.done"
fi

# initramfs per workload: /guest/env.sh names it
build_initrd() { # workload
  local w=$1 files=("$work/env-$1.sh:/guest/env.sh")
  {
    echo "BENCH_WORKLOAD=$w BENCH_SECONDS=$seconds BENCH_FIO_MIB=$fio_mib BENCH_MEM_WAIT=${mem_wait:-0} BENCH_FIO_ENGINE=$engine"
  } >"$work/env-$w.sh"
  [[ $w == untar-* ]] && files+=("$cache/small/small.tar:/guest/small.tar")
  [[ $w == rand-* || $w == seq-* ]] && files+=("$fio_bin:/guest/fio")
  vfsd_build_initramfs "$work/initrd-$w" "$VFSD_ROOT/tests/e2e/guest/bench.sh" "${files[@]}"
}

# prepare_share DAEMON WORKLOAD: the daemon's share as the workload expects it
prepare_share() {
  local s=$work/share-$1 w=$2
  mkdir -p "$s"
  find "$s" -mindepth 1 -maxdepth 1 ! -name fio.dat -exec rm -rf {} +
  if [[ $w == rand-* || $w == seq-* || $w == cp-file ]] &&
    [[ $(stat -c %s "$s/fio.dat" 2>/dev/null || echo 0) != $((fio_mib << 20)) ]]; then
    head -c $((fio_mib << 20)) /dev/urandom >"$s/fio.dat"
  fi
  case $w in
    ls-l-*) cp -a "$cache/small/ls" "$s/ls" ;;
    rm-rf-* | find-* | du-*) cp -a "$cache/small/tree" "$s/tree" ;;
  esac
  sync -f "$s"
}

# boot_one DAEMON WORKLOAD SHARE LOG: one daemon, one guest; the console in LOG.
# With a callback (on_boot), the guest runs in the background and the
# callback watches it.
boot_one() {
  local d=$1 w=$2 share=$3 log=$4 rc=0
  if ! vfsd_start_daemon "$d" "$work/sock" "$share" "$log.daemon" "$binary"; then
    echo "  $d $w: daemon did not start" >&2
    return 1
  fi
  if declare -F on_boot >/dev/null; then
    vfsd_boot_guest "$work/sock" "$work/initrd-$w" "$log" "$limit" &
    boot_pid=$!
    on_boot "$log" || true
    wait "$boot_pid" || rc=$?
    boot_pid=""
  else
    vfsd_boot_guest "$work/sock" "$work/initrd-$w" "$log" "$limit" || rc=$?
  fi
  vfsd_stop_daemon 5 || true
  if ((rc != 0)) || ! grep -q ' BENCH done' "$log"; then
    echo "  $d $w: guest failed (QEMU status $rc); console tail:" >&2
    vfsd_console_tail "$log" 15 ' VFSD-KMSG' >&2
    return 1
  fi
  if vfsd_kernel_checks "$log" 1 | grep ' FAIL ' >&2; then
    echo "  $d $w: the guest kernel reported a problem (console: $log)" >&2
    return 1
  fi
  if grep -q ' BENCH error' "$log"; then
    echo "  $d $w: $(vfsd_console_lines "$log" 'BENCH error' | tr '\n' ' ')" >&2
    return 1
  fi
}

header() {
  echo "virtio-fs guest benchmark: QEMU $(qemu-system-x86_64 --version | head -n1 | awk '{print $4}') -accel tcg," \
    "$cpus vCPU(s), ${queues:-1} request queue(s), 512 MiB, guest $(basename "$(vfsd_kernel_image)" | sed 's/vmlinuz-//'), $(nproc) host cores"
}

# ---- --memory -------------------------------------------------------------------
# tree_pids PID: PID and its descendants
tree_pids() {
  local p c
  for p in "$@"; do
    echo "$p"
    for c in $(pgrep -P "$p" || true); do tree_pids "$c"; done
  done
}
# sample PID: "RSS_KiB FDS PROCS" summed over the process tree
sample() {
  local rss=0 fds=0 n=0 p r
  for p in $(tree_pids "$1"); do
    r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null) || continue
    [[ -n $r ]] || continue
    rss=$((rss + r)) n=$((n + 1))
    fds=$((fds + $(find "/proc/$p/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)))
  done
  echo "$rss $fds $n"
}
# wait_marker LOG TEXT: until the console shows TEXT (or the guest ended)
wait_marker() {
  while ! grep -q " $2" "$1" 2>/dev/null; do
    kill -0 "$boot_pid" 2>/dev/null || return 1
    sleep 0.2
  done
}

if ((memory)); then
  mem_wait=6
  share=$cache/mem-share-$mem_dirs
  tree=$share/tree100k
  if [[ ! -f $share/.done ]]; then
    echo "making the tree of $mem_dirs x 1000 files in $tree (once)" >&2
    rm -rf "$share" && mkdir -p "$tree"
    for ((i = 0; i < mem_dirs; i++)); do
      mkdir "$tree/d$i"
      (cd "$tree/d$i" && touch f{0..999})
    done
    touch "$share/.done"
  fi
  build_initrd memory
  IFS=', ' read -ra mlist <<<"$modes"
  on_boot() {
    local log=$1
    wait_marker "$log" "BENCH mem-mounted" || return 1
    before=$(sample "$VFSD_DAEMON_PID")
    wait_marker "$log" "BENCH mem-found" || return 1
    after=$(sample "$VFSD_DAEMON_PID")
  }
  rows=()
  for d in "${list[@]}"; do
    ms=("${mlist[@]}")
    [[ $d == c ]] && ms=(-)
    for m in "${ms[@]}"; do
      echo "memory: $d ${m/-/(no option)}" >&2
      export VFSD_DAEMON_ARGS="" VFSD_RUST_ARGS=""
      [[ $d == ours && $m != - ]] && VFSD_DAEMON_ARGS="--inode-file-handles=$m"
      [[ $d == rust && $m != - ]] && VFSD_RUST_ARGS="--inode-file-handles=$m"
      before="" after=""
      log=$work/console-mem-$d-$m.log
      if ! boot_one "$d" memory "$share" "$log" || [[ -z $before || -z $after ]]; then
        rows+=("$d $m - - - - - - -")
        continue
      fi
      n=$(vfsd_console_lines "$log" 'BENCH mem-found' | awk '{print $3}')
      read -r rb fb _ <<<"$before"
      read -r ra fa pa <<<"$after"
      rows+=("$d $m $n $((rb / 1024)) $((ra / 1024)) $fb $fa $(((ra - rb) * 1024 / n)) $pa")
    done
  done
  echo
  header
  echo "find over $mem_dirs dirs x 1000 files ($((mem_dirs * 1001 + 1)) entries); daemons' fd limit here:" \
    "$(ulimit -Sn) soft, $(ulimit -Hn) hard; RSS and fds summed over the daemon's processes"
  printf '%-6s %-10s %9s %12s %12s %10s %10s %12s %6s\n' daemon fh-mode entries "RSS mnt MiB" "RSS find MiB" \
    "fds mnt" "fds find" "B/inode" procs
  for r in "${rows[@]}"; do
    # shellcheck disable=SC2086
    printf '%-6s %-10s %9s %12s %12s %10s %10s %12s %6s\n' $r
  done
  for r in "${rows[@]}"; do
    read -r d m n _ <<<"$r"
    [[ $n == "$((mem_dirs * 1001 + 1))" ]] ||
      echo "note: $d ${m/-/} saw $n of $((mem_dirs * 1001 + 1)) entries (an fd limit, or a failed run: console in --keep's folder)"
  done
  exit 0
fi

# ---- the throughput table ---------------------------------------------------------
for w in "${wl[@]}"; do build_initrd "$w"; done
declare -A V # V[workload,daemon] = "v1 v2 ..."
for ((r = 1; r <= rounds; r++)); do
  for w in "${wl[@]}"; do
    for d in "${list[@]}"; do
      echo "round $r/$rounds: $w on $d" >&2
      prepare_share "$d" "$w"
      log=$work/console-$r-$w-$d.log
      boot_one "$d" "$w" "$work/share-$d" "$log" || continue
      v=$(vfsd_console_lines "$log" 'BENCH result' | awk '{print $3}' | tail -n 1)
      [[ -n $v ]] && V[$w,$d]="${V[$w,$d]:-} $v"
      echo "  $v $(unit_of "$w" | sed 's/-down//')" >&2
    done
  done
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "-"; else if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { # ours peer direction
  awk -v a="$1" -v b="$2" -v dir="$3" 'BEGIN {
    if (a == "-" || b == "-" || a + 0 == 0 || b + 0 == 0) { print "-"; exit }
    printf "%.2f", (dir == "down") ? b / a : a / b }'
}
echo
header
echo "medians of $rounds round(s); fio: ${seconds} s per run, O_DIRECT, ${fio_mib} MiB file, QD>1 on $engine;" \
  "ratios >1: ours is better"
cols=("${list[@]}")
printf '%-22s %-10s' workload unit
for d in "${cols[@]}"; do printf ' %10s' "$d"; done
for p in rust c; do [[ " ${cols[*]} " == *" ours "* && " ${cols[*]} " == *" $p "* ]] && printf ' %10s' "ours/$p"; done
echo
for w in "${wl[@]}"; do
  u=$(unit_of "$w") dir=up
  [[ $u == *-down ]] && { dir=down u="${u%-down} (lower)"; }
  printf '%-22s %-10s' "$w" "$u"
  declare -A M=()
  for d in "${cols[@]}"; do
    M[$d]=$(median <<<"${V[$w,$d]:-}")
    printf ' %10s' "${M[$d]}"
  done
  for p in rust c; do
    [[ -n ${M[ours]:-} && -n ${M[$p]:-} ]] && printf ' %10s' "$(ratio "${M[ours]}" "${M[$p]}" "$dir")"
  done
  echo
  unset M
done
