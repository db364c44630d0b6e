#!/usr/bin/env bash
# Builds the initramfs of the small test guest: busybox-static, the virtio-fs
# kernel modules of the cached Debian kernel, tests/e2e/guest/init as /init,
# a minimal /etc/passwd + /etc/group, and a payload script run by the init.
#
#   build-initramfs.sh --out FILE --run GUEST_SCRIPT [--file SRC:DEST]...
#
# SRC:DEST copies a host file into the image (DEST absolute, e.g.
# /guest/env.sh, which the init sources before the payload).
# The kernel is taken from .cache/kernel-6.1 (scripts/install-deps.sh), or
# from $VFSD_KERNEL_ROOT (the root of an unpacked linux-image package).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

out="" run="" files=()
while (($#)); do
  case $1 in
    --out) out=$2; shift 2 ;;
    --run) run=$2; shift 2 ;;
    --file) files+=("$2"); shift 2 ;;
    *) echo "build-initramfs: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n $out && -n $run ]] || { echo "usage: $0 --out FILE --run SCRIPT [--file SRC:DEST]..." >&2; exit 2; }

KROOT=${VFSD_KERNEL_ROOT:-$ROOT/.cache/kernel-6.1/root}
moddir=$(echo "$KROOT"/lib/modules/*/kernel)
[[ -d $moddir ]] || { echo "build-initramfs: no kernel modules under $KROOT (run scripts/install-deps.sh)" >&2; exit 1; }
# The guest has no libc: busybox must be the static build (busybox-static).
BUSYBOX=${VFSD_BUSYBOX:-/bin/busybox}
if [[ ! -x $BUSYBOX ]] || ldd "$BUSYBOX" >/dev/null 2>&1; then
  echo "build-initramfs: $BUSYBOX is missing or not static (install busybox-static)" >&2
  exit 1
fi

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
chmod 0755 "$stage" # mktemp made it 0700: the non-root guest user must traverse /
mkdir -p "$stage"/{bin,dev,etc,guest,lib/vfsd-modules,mnt,proc,root,sys,tmp}
cp "$BUSYBOX" "$stage/bin/busybox"
install -m 0755 "$ROOT/tests/e2e/guest/init" "$stage/init"
install -m 0755 "$run" "$stage/guest/run.sh"

# Debian ships these modules uncompressed today; newer kernels may use .ko.xz,
# which busybox insmod cannot load, so decompress at build time.
# Some kernels (Debian's 6.12) build these in: modules.builtin lists them and
# there is no file to copy; the init skips what the image does not carry.
builtin_list=$(dirname "$moddir")/modules.builtin
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
  drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci fs/fuse/fuse fs/fuse/virtiofs; do
  name=$(basename "$m")
  if [[ -f $builtin_list ]] && grep -qx "kernel/$m.ko" "$builtin_list"; then
    continue
  elif [[ -f $moddir/$m.ko ]]; then
    cp "$moddir/$m.ko" "$stage/lib/vfsd-modules/$name.ko"
  elif [[ -f $moddir/$m.ko.xz ]]; then
    xz -dc "$moddir/$m.ko.xz" >"$stage/lib/vfsd-modules/$name.ko"
  elif [[ -f $moddir/$m.ko.zst ]]; then
    zstd -qdc "$moddir/$m.ko.zst" >"$stage/lib/vfsd-modules/$name.ko"
  else
    echo "build-initramfs: module $m not found under $moddir" >&2
    exit 1
  fi
done

# The non-root user of the ownership check (uid/gid differ on purpose).
cat >"$stage/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
e2euser:x:1234:2345:e2e test user:/tmp:/bin/sh
EOF
cat >"$stage/etc/group" <<'EOF'
root:x:0:
e2egroup:x:2345:
EOF

for f in "${files[@]}"; do
  src=${f%%:*} dest=${f#*:}
  mkdir -p "$stage$(dirname "$dest")"
  cp "$src" "$stage$dest"
done

# Uncompressed newc: the kernel unpacks it as is, and building stays instant.
(cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) >"$out.tmp"
mv "$out.tmp" "$out"
