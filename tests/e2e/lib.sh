# shellcheck shell=bash disable=SC2034,SC2054
# (VFSD_* results are read by the scripts that source this; commas in the
# QEMU arguments belong to option values.)
# Host-side helpers shared by the e2e test, the demo and the benchmarks:
# start a virtio-fs daemon on a socket, build the guest's initramfs, boot the
# guest under QEMU (TCG) with its console captured. Source it from bash.
# The recipe itself is described in DEVELOPERS.md.

VFSD_ROOT=${VFSD_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
VFSD_C_DAEMON=${VFSD_C_DAEMON:-/usr/lib/qemu/virtiofsd}
VFSD_RUST_DIR=${VFSD_RUST_DIR:-$VFSD_ROOT/.cache/rust-virtiofsd}
VFSD_TAG=${VFSD_TAG:-share}
VFSD_DAEMON_PID=""

vfsd_die() {
  echo "error: $*" >&2
  exit 1
}

# Prints the guest kernel image of the cached Debian kernel package.
vfsd_kernel_image() {
  local kroot=${VFSD_KERNEL_ROOT:-$VFSD_ROOT/.cache/kernel-6.1/root} k
  for k in "$kroot"/boot/vmlinuz-*; do
    [[ -f $k ]] && { echo "$k"; return 0; }
  done
  return 1
}

# Prints the command line of the Rust virtiofsd unpacked by
# scripts/fetch-rust-virtiofsd.sh (its own glibc, run through its own loader).
vfsd_rust_command() {
  local d=$VFSD_RUST_DIR
  [[ -x $d/usr/libexec/virtiofsd && -e $d/lib64/ld-linux-x86-64.so.2 ]] || return 1
  echo "$d/lib64/ld-linux-x86-64.so.2 --library-path $d/lib/x86_64-linux-gnu:$d/usr/lib/x86_64-linux-gnu $d/usr/libexec/virtiofsd"
}

# vfsd_start_daemon KIND SOCKET DIR LOG [BINARY]
# KIND is ours (BINARY = our virtiofsd), c (QEMU 7.2's C virtiofsd) or rust.
# Starts it in the background (VFSD_DAEMON_PID) and waits for its socket.
vfsd_start_daemon() {
  local kind=$1 sock=$2 dir=$3 log=$4 bin=${5:-}
  local -a cmd
  rm -f "$sock"
  case $kind in
    ours)
      [[ -x $bin ]] || vfsd_die "our daemon binary '$bin' is not executable"
      cmd=("$bin" "--socket-path=$sock" "--shared-dir=$dir")
      ;;
    c)
      [[ -x $VFSD_C_DAEMON ]] || vfsd_die "$VFSD_C_DAEMON is missing (apt-get install qemu-system-common)"
      # chroot sandbox: the namespace one needs privileges containers often lack.
      cmd=("$VFSD_C_DAEMON" "--socket-path=$sock" -o "source=$dir" -o cache=auto -o sandbox=chroot)
      ;;
    rust)
      local rc
      rc=$(vfsd_rust_command) || vfsd_die "Rust virtiofsd not found in $VFSD_RUST_DIR (run scripts/fetch-rust-virtiofsd.sh)"
      # shellcheck disable=SC2206
      cmd=($rc "--socket-path=$sock" "--shared-dir=$dir" --cache=auto --sandbox=chroot)
      ;;
    *) vfsd_die "unknown daemon kind '$kind' (ours|c|rust)" ;;
  esac
  echo "+ ${cmd[*]}" >"$log"
  "${cmd[@]}" >>"$log" 2>&1 &
  VFSD_DAEMON_PID=$!
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -S $sock ]] && return 0
    kill -0 "$VFSD_DAEMON_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "daemon ($kind) did not create $sock; its log:" >&2
  sed 's/^/  | /' "$log" >&2
  return 1
}

# Waits up to $1 seconds for the daemon to exit by itself (it should when
# QEMU disconnects), then kills it. Returns 0 if it exited by itself.
vfsd_stop_daemon() {
  local wait_s=${1:-5} i
  [[ -n $VFSD_DAEMON_PID ]] || return 0
  for ((i = 0; i < wait_s * 10; i++)); do
    kill -0 "$VFSD_DAEMON_PID" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$VFSD_DAEMON_PID" 2>/dev/null; then
    kill "$VFSD_DAEMON_PID" 2>/dev/null
    wait "$VFSD_DAEMON_PID" 2>/dev/null || true
    VFSD_DAEMON_PID=""
    return 1
  fi
  VFSD_DAEMON_EXIT=0
  wait "$VFSD_DAEMON_PID" 2>/dev/null || VFSD_DAEMON_EXIT=$?
  VFSD_DAEMON_PID=""
  return 0
}

# vfsd_build_initramfs OUT RUN_SCRIPT [SRC:DEST]...
vfsd_build_initramfs() {
  local out=$1 run=$2
  shift 2
  local -a extra=()
  local f
  for f in "$@"; do extra+=(--file "$f"); done
  "$VFSD_ROOT/scripts/build-initramfs.sh" --out "$out" --run "$run" "${extra[@]}"
}

# vfsd_boot_guest SOCKET INITRD CONSOLE_LOG TIMEOUT_S [reboot]
# Boots the guest; returns QEMU's exit status (124 = killed by the time limit).
# If the daemon (VFSD_DAEMON_PID) dies first, QEMU is stopped 5 s later and
# CONSOLE_LOG.daemon-died is written.
# Each console line is logged as "<host epoch seconds> <line>" so callers can
# time events; with VFSD_VERBOSE=1 the console is also echoed to stderr.
vfsd_boot_guest() {
  local sock=$1 initrd=$2 log=$3 limit=$4 mode=${5:-}
  local kernel
  kernel=$(vfsd_kernel_image) || vfsd_die "no guest kernel (run scripts/install-deps.sh)"
  # VFSD_FS_DEVICES="tag=socket ..." attaches one device per daemon instead
  # of the single $sock (the conformance suite: one daemon per profile).
  local -a devices=(-chardev "socket,id=vfs,path=$sock"
    -device "vhost-user-fs-pci,chardev=vfs,tag=$VFSD_TAG,queue-size=1024")
  if [[ -n ${VFSD_FS_DEVICES:-} ]]; then
    devices=()
    local td n=0
    for td in $VFSD_FS_DEVICES; do
      devices+=(-chardev "socket,id=vfs$n,path=${td#*=}"
        -device "vhost-user-fs-pci,chardev=vfs$n,tag=${td%%=*},queue-size=1024")
      ((++n))
    done
  fi
  local -a qemu=(qemu-system-x86_64 -nodefaults -no-user-config -accel tcg -m 512M
    -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem
    "${devices[@]}"
    -kernel "$kernel" -initrd "$initrd"
    -append "console=ttyS0 quiet loglevel=3 panic=-1 vfsdtag=$VFSD_TAG"
    -display none -serial stdio -monitor none)
  # The reboot check needs QEMU to reset the VM on a guest reboot; every other
  # run treats a reboot (e.g. after a panic) as the end.
  [[ $mode == reboot ]] || qemu+=(-no-reboot)
  local pidfile=$log.qemu-pid
  qemu+=(-pidfile "$pidfile")
  rm -f "$pidfile" "$log.daemon-died"
  : >"$log"
  VFSD_BOOT_START=$EPOCHREALTIME
  # A daemon that dies leaves the guest waiting for replies forever: stop
  # QEMU a few seconds later instead of waiting for the time limit.
  local watcher=""
  if [[ -n $VFSD_DAEMON_PID ]]; then
    (
      while kill -0 "$VFSD_DAEMON_PID" 2>/dev/null; do sleep 1; done
      sleep 5
      if [[ -s $pidfile ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        echo "daemon exited while the guest was running" >"$log.daemon-died"
        kill "$(cat "$pidfile")" 2>/dev/null
      fi
    ) &
    watcher=$!
  fi
  local line errexit=0
  [[ $- == *e* ]] && errexit=1
  set +e
  timeout --kill-after=10 "$limit" "${qemu[@]}" </dev/null 2>&1 |
    while IFS= read -r line; do
      line=${line%$'\r'}
      printf '%s %s\n' "$EPOCHREALTIME" "$line" >>"$log"
      [[ ${VFSD_VERBOSE:-0} == 1 ]] && printf '  guest| %s\n' "$line" >&2
    done
  local rc=${PIPESTATUS[0]}
  if [[ -n $watcher ]]; then kill "$watcher" 2>/dev/null; wait "$watcher" 2>/dev/null; fi
  rm -f "$pidfile"
  ((errexit)) && set -e
  return "$rc"
}

# Prints the console lines (timestamps stripped) that start with $2.
vfsd_console_lines() {
  sed -n "s/^[0-9.]* \(${2}.*\)$/\1/p" "$1"
}
