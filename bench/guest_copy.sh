#!/usr/bin/env bash
# Guest-side benchmark: boots the test guest once per daemon and prints, side
# by side, boot-to-mount time, a sequential write and read (the page cache is
# dropped before reading, so the daemon serves every byte), a large-file copy
# inside the share, and a small-file workload (untar 2000 files, find, du, rm).
# A benchmark, not a test: it never fails on numbers.
#
#   bench/guest_copy.sh [--daemons=ours,c,rust] [--binary PATH] [--mib N] [--runs N]
#
# Under TCG (no KVM) absolute numbers are low and noisy; compare columns.
# The Rust virtiofsd comes from scripts/fetch-rust-virtiofsd.sh (skipped if absent).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../tests/e2e/lib.sh
source "$HERE/../tests/e2e/lib.sh"

daemons=ours,c,rust binary=$VFSD_ROOT/build/virtiofsd mib=256 runs=1
while (($#)); do
  case $1 in
    --daemons=*) daemons=${1#*=} ;;
    --binary) binary=$2; shift ;;
    --binary=*) binary=${1#*=} ;;
    --mib=*) mib=${1#*=} ;;
    --runs=*) runs=${1#*=} ;;
    -h | --help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

work=$(mktemp -d "${TMPDIR:-/tmp}/vfsd-bench.XXXXXX")
trap '[[ -n $VFSD_DAEMON_PID ]] && kill $VFSD_DAEMON_PID 2>/dev/null; rm -rf "$work"' EXIT

# The small-file tree: 2000 files of 100 B..4 KiB in 40 folders, as a tarball
# the guest unpacks into the share.
mkdir -p "$work/tree"
for ((i = 0; i < 2000; i++)); do
  d=$work/tree/dir$((i % 40))
  [[ -d $d ]] || mkdir "$d"
  head -c $((100 + (i * 7919) % 4000)) /dev/zero | tr '\0' 'a' >"$d/file$i.txt"
done
tar cf "$work/small.tar" -C "$work/tree" .
echo "BENCH_MIB=$mib" >"$work/env.sh"
vfsd_build_initramfs "$work/initrd" "$HERE/../tests/e2e/guest/bench.sh" \
  "$work/env.sh:/guest/env.sh" "$work/small.tar:/guest/small.tar"

declare -A R # R[daemon,key] = value
cols=()
mbps() { awk -v m="$mib" -v cs="$1" 'BEGIN{ if (cs > 0) printf "%.1f", m * 100 / cs; else print "-" }'; }
secs() { awk -v cs="$1" 'BEGIN{ printf "%.2f", cs / 100 }'; }

run_one() { # daemon column
  local d=$1 col=$2 share=$work/share-$1
  rm -rf "$share" && mkdir -p "$share"
  if ! vfsd_start_daemon "$d" "$work/sock-$d" "$share" "$work/daemon-$d.log" "$binary"; then
    echo "  $d: daemon did not start" >&2
    return 1
  fi
  local rc=0
  vfsd_boot_guest "$work/sock-$d" "$work/initrd" "$work/console-$d.log" 600 || rc=$?
  vfsd_stop_daemon 5 || true
  if ((rc != 0)) || ! grep -q 'BENCH done' "$work/console-$d.log"; then
    echo "  $d: guest failed (QEMU status $rc); console tail:" >&2
    grep -v ' VFSD-KMSG' "$work/console-$d.log" | tail -n 15 | cut -d' ' -f2- >&2
    return 1
  fi
  # Numbers from a guest whose kernel warned are not worth printing.
  if vfsd_kernel_checks "$work/console-$d.log" 1 | grep ' FAIL ' >&2; then
    echo "  $d: the guest kernel reported a problem (console: $work/console-$d.log)" >&2
    return 1
  fi
  local ts key val
  while read -r ts _ key val; do
    R[$col,$key]=$val
    [[ $key == mounted_cs ]] && R[$col,host_mount_s]=$(awk -v a="$VFSD_BOOT_START" -v b="$ts" 'BEGIN{printf "%.2f", b-a}')
  done < <(grep -E '^[0-9.]+ BENCH ' "$work/console-$d.log")
  if grep -q 'BENCH error' "$work/console-$d.log"; then
    echo "  $d: $(grep 'BENCH error' "$work/console-$d.log" | cut -d' ' -f2- | tr '\n' ' ')" >&2
  fi
}

IFS=, read -ra list <<<"$daemons"
for d in "${list[@]}"; do
  case $d in
    ours) [[ -x $binary ]] || { echo "skip ours: $binary not built" >&2; continue; } ;;
    c) [[ -x $VFSD_C_DAEMON ]] || { echo "skip c: $VFSD_C_DAEMON missing" >&2; continue; } ;;
    rust) vfsd_rust_command >/dev/null || { echo "skip rust: run scripts/fetch-rust-virtiofsd.sh" >&2; continue; } ;;
  esac
  for ((r = 1; r <= runs; r++)); do
    echo "running: $d (run $r/$runs)" >&2
    col=$d
    ((runs > 1)) && col="$d#$r"
    run_one "$d" "$col" || continue
    cols+=("$col")
  done
done
((${#cols[@]})) || { echo "no daemon ran" >&2; exit 1; }

row() { # label, then one value per column
  local label=$1
  shift
  printf '%-34s' "$label"
  printf '%14s' "$@"
  echo
}
echo
echo "virtio-fs guest benchmark: QEMU $(qemu-system-x86_64 --version | head -n1 | awk '{print $4}') -accel tcg, 1 vCPU, 512 MiB," \
  "guest $(basename "$(vfsd_kernel_image)" | sed 's/vmlinuz-//'), $(nproc) host cores"
row "" "${cols[@]}"
vals() { # key formatter
  local c out=()
  for c in "${cols[@]}"; do
    local v=${R[$c,$1]:-}
    if [[ -z $v ]]; then out+=("-"); else out+=("$($2 "$v")"); fi
  done
  row "$3" "${out[@]}"
}
ident() { echo "$1"; }
vals host_mount_s ident "boot to mount, host wall (s)"
vals mounted_cs secs "boot to mount, guest uptime (s)"
vals write_cs mbps "write ${mib} MiB seq, 1 MiB (MB/s)"
vals read_cs mbps "read ${mib} MiB seq, uncached (MB/s)"
vals copy_cs mbps "cp ${mib} MiB file in share (MB/s)"
vals untar_cs secs "untar 2000 small files (s)"
vals find_cs secs "find, uncached (s)"
vals du_cs secs "du -s, uncached (s)"
vals rm_cs secs "rm -rf the 2000 files (s)"
vals find_count ident "files found (expect 2000)"
