#!/usr/bin/env bash
# The demo: build virtiofsd, serve a fresh folder, boot a small Linux guest
# (QEMU, software emulation, about 10 s) that mounts the folder, lists it and
# writes a file, which the host then shows.
#
#   scripts/demo.sh [--build-dir DIR] [--daemon=ours|c|rust] [--no-install]
#
# --daemon=c/rust serves the same demo with QEMU's C or the Rust virtiofsd,
# for comparison. Run as root on Debian 12 (the install step uses apt-get).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

build=$ROOT/build daemon=ours install=1
while (($#)); do
  case $1 in
    --build-dir) build=$(realpath -m "$2"); shift ;;
    --build-dir=*) build=$(realpath -m "${1#*=}") ;;
    --daemon=*) daemon=${1#*=} ;;
    --no-install) install=0 ;;
    -h | --help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done

step=0 bold="" red="" green="" plain=""
if [[ -t 1 ]]; then bold=$'\033[1m' red=$'\033[1;31m' green=$'\033[1;32m' plain=$'\033[0m'; fi
section() {
  step=$((step + 1))
  printf '\n%s== %d. %s%s\n' "$bold" "$step" "$*" "$plain"
}
fail() {
  printf '\n%sDEMO FAILED: %s%s\n' "$red" "$*" "$plain" >&2
  exit 1
}

section "Dependencies (scripts/install-deps.sh)"
if ((install)); then
  scripts/install-deps.sh || fail "installing dependencies"
fi
echo "ok: compiler, cmake, qemu-system-x86, busybox-static and the guest kernel are there"

section "Build (cmake -S . -B $build -G Ninja && cmake --build $build)"
if [[ $daemon == ours ]]; then
  cmake -S . -B "$build" -G Ninja >/dev/null || fail "cmake configure"
  cmake --build "$build" || fail "build"
  echo "built: $build/virtiofsd"
else
  echo "skipped: serving with the $daemon virtiofsd"
fi

# shellcheck source=../tests/e2e/lib.sh
source "$ROOT/tests/e2e/lib.sh"
work=$ROOT/out/demo
section "A fresh demo folder: $work/share"
rm -rf "$work"
mkdir -p "$work/share/photos" "$work/share/notes"
echo "Hello from the host! This folder is served by virtiofsd-cpp." >"$work/share/hello.txt"
printf 'milk\neggs\nbread\n' >"$work/share/notes/shopping.txt"
head -c 1048576 /dev/urandom >"$work/share/photos/random-1MiB.bin"
ln -s notes/shopping.txt "$work/share/shopping-link"
ls -la "$work/share"

section "Start the daemon"
cleanup() { if [[ -n $VFSD_DAEMON_PID ]]; then kill "$VFSD_DAEMON_PID" 2>/dev/null || true; fi; }
trap cleanup EXIT
if [[ $daemon == ours ]]; then
  echo "$build/virtiofsd --socket-path=$work/vhost.sock --shared-dir=$work/share"
fi
vfsd_start_daemon "$daemon" "$work/vhost.sock" "$work/share" "$work/daemon.log" "$build/virtiofsd" ||
  fail "the daemon did not start (log: $work/daemon.log)"
echo "listening on $work/vhost.sock (pid $VFSD_DAEMON_PID, log $work/daemon.log)"

section "Boot the guest (QEMU -accel tcg, Debian kernel $(basename "$(vfsd_kernel_image)" | sed 's/vmlinuz-//'), busybox initramfs)"
cat <<EOF
qemu-system-x86_64 -accel tcg -m 512M \\
  -object memory-backend-memfd,id=mem,size=512M,share=on -numa node,memdev=mem \\
  -chardev socket,id=vfs,path=$work/vhost.sock \\
  -device vhost-user-fs-pci,chardev=vfs,tag=$VFSD_TAG,queue-size=1024 \\
  -kernel vmlinuz -initrd initramfs -append console=ttyS0 -display none -serial stdio
EOF
vfsd_build_initramfs "$work/initrd" "$ROOT/tests/e2e/guest/demo.sh" || fail "building the initramfs"
echo
rc=0
VFSD_VERBOSE=0 vfsd_boot_guest "$work/vhost.sock" "$work/initrd" "$work/console.log" 180 || rc=$?
# Show the guest's own output (the init's, not the kernel's).
# (|| true: a guest that printed nothing of its own is not a demo failure.)
sed -n 's/^[0-9.]* //p' "$work/console.log" | { grep -vE '^\[ *[0-9]+\.[0-9]+\]|^VFSD-INIT|^VFSD-KMSG|^DEMO ' || true; } |
  sed 's/^/  guest| /'
vfsd_stop_daemon 10 || echo "note: the daemon did not exit by itself; stopped it"
((rc == 0)) || fail "QEMU ended with status $rc (124 = time limit; console: $work/console.log)"
grep -q '^[0-9.]* DEMO OK' "$work/console.log" || fail "the guest did not finish (console: $work/console.log)"
# A kernel warning, BUG or oops in the guest fails the demo too.
if vfsd_kernel_checks "$work/console.log" 1 | grep ' FAIL '; then
  fail "the guest kernel reported a problem (console: $work/console.log)"
fi

section "Back on the host: the file the guest wrote"
[[ -f $work/share/from-guest.txt ]] || fail "$work/share/from-guest.txt is missing"
ls -la "$work/share/from-guest.txt"
sed 's/^/  host| /' "$work/share/from-guest.txt"
grep -q "Hello from the guest" "$work/share/from-guest.txt" || fail "unexpected content"
printf '\n%sDemo OK%s: the guest mounted %s, listed it and wrote a file the host sees.\n' "$green" "$plain" "$work/share"
