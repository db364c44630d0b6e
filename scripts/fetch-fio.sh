#!/usr/bin/env bash
# Builds a static fio for the benchmark guest (bench/run_guest.sh), whose
# initramfs is busybox-static with no libc: Debian's fio binary links against
# librbd, librados, glusterfs and more, so it cannot be copied in. Gets fio's
# source package from Debian bookworm through a PRIVATE apt list under
# .cache/fio-apt (scripts/lib/private-apt.sh; this system's apt sources are
# not touched), unpacks it and builds it with --build-static and every
# optional engine that needs a library switched off but libaio, whose static
# libaio.a comes from bookworm's libaio-dev (unpacked under .cache/fio-apt,
# not installed). libaio is what gives the guest true queue depths on
# virtio-fs: FUSE serves O_DIRECT AIO asynchronously, while io_uring (built
# in, no library) punts FUSE files to a few blocking kernel workers. Result:
# .cache/fio/fio. Idempotent: does nothing once that binary exists, runs, is
# static and has both engines.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=$ROOT/.cache/fio
APT=$ROOT/.cache/fio-apt
SRC=$ROOT/.cache/fio-src

is_ready() {
  [[ -x $DEST/fio ]] && "$DEST/fio" --version >/dev/null 2>&1 && ! ldd "$DEST/fio" >/dev/null 2>&1 &&
    "$DEST/fio" --enghelp 2>/dev/null | grep -qw libaio
}
if is_ready; then
  echo "fetch-fio: already there: $("$DEST/fio" --version) ($DEST/fio)"
  exit 0
fi

# shellcheck source=lib/private-apt.sh
source "$ROOT/scripts/lib/private-apt.sh"
private_apt_init "$APT" "deb http://deb.debian.org/debian bookworm main" \
  "deb-src http://deb.debian.org/debian bookworm main"
AIO=$APT/libaio
if ! compgen -G "$SRC/fio_*.dsc" >/dev/null || [[ ! -f $AIO/usr/lib/x86_64-linux-gnu/libaio.a ]]; then
  echo "fetch-fio: reading bookworm's package lists (private, $APT)"
  private_apt_update
  rm -rf "$SRC" "$AIO" "$APT/debs" && mkdir -p "$SRC"
  (cd "$SRC" && private_apt_get -qq source --download-only fio)
  private_apt_download "$APT/debs" libaio-dev
  dpkg -x "$APT"/debs/libaio-dev_*.deb "$AIO"
fi
dsc=$(compgen -G "$SRC/fio_*.dsc" | head -n 1)
tree=$SRC/tree
rm -rf "$tree"
# dpkg-source checks the signature when it can; the archive's Sources index
# already vouched for the checksums, so a missing key is not fatal.
dpkg-source --no-check -x "$dsc" "$tree" >/dev/null

cd "$tree"
# Only what a static binary can carry: no rbd, rados, gluster, http, numa,
# rdma, pmem, GUI... (configure probes each; the --disable-* make the choice
# explicit instead of depending on what -dev packages are installed).
disable=()
for o in rdma rados rbd http gfapi libnfs libnuma pmem gfio libiscsi dfs xnvme isal libblkio tcmalloc libzbc; do
  ./configure --help 2>/dev/null | grep -q -- "--disable-$o\b" && disable+=("--disable-$o")
done
LDFLAGS="-L$AIO/usr/lib/x86_64-linux-gnu" ./configure --build-static --disable-native \
  --extra-cflags="-I$AIO/usr/include" "${disable[@]}" >"$tree/configure.out" 2>&1 ||
  { tail -n 20 "$tree/configure.out" >&2; exit 1; }
make -j"$(nproc)" fio >"$tree/make.out" 2>&1 || { tail -n 30 "$tree/make.out" >&2; exit 1; }
mkdir -p "$DEST"
install -m 0755 fio "$DEST/fio.tmp"
strip "$DEST/fio.tmp"
mv "$DEST/fio.tmp" "$DEST/fio"
is_ready || { echo "fetch-fio: $DEST/fio is not a working static binary" >&2; exit 1; }
"$DEST/fio" --enghelp 2>/dev/null | grep -qw io_uring || echo "fetch-fio: warning: no io_uring engine in this fio" >&2
echo "fetch-fio: built $("$DEST/fio" --version) ($DEST/fio)"
