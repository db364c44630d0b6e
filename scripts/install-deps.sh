#!/usr/bin/env bash
# Installs everything the build, the tests and the demo need, idempotently.
# Debian 12, run as root. The guest kernel is unpacked into .cache/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
CACHE="$ROOT/.cache"

PACKAGES=(
  build-essential g++ cmake ninja-build pkg-config clang-format clang-tidy
  clang libclang-rt-14-dev llvm jq
  libgtest-dev libgmock-dev libbenchmark-dev
  libexpected-dev libcli11-dev libspdlog-dev libfmt-dev
  libabsl-dev # absl::InlinedVector: a request's segment lists without the heap
  libseccomp-dev libcap-ng-dev zlib1g-dev
  liburing-dev # bench/io_uring_bench: io_uring weighed against preadv/pwritev
  qemu-system-x86 busybox-static cpio attr acl
  uidmap  # newuidmap/newgidmap: --uid-map/--gid-map of an unprivileged daemon
  python3 # the e2e tests' QMP client (tests/e2e/qmp.py) and metrics scraper
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Guest kernel: the package linux-image-amd64 points at moves with security
# updates, so resolve it instead of naming a version.
fetch_kernel() { # $1 = package name, $2 = folder under .cache
  local pkg=$1 dest="$CACHE/$2"
  if [[ -f "$dest/.done" && "$(cat "$dest/.done")" == "$pkg" ]]; then return; fi
  rm -rf "$dest" && mkdir -p "$dest/deb"
  (cd "$dest/deb" && apt-get download "$pkg" >/dev/null)
  dpkg -x "$dest"/deb/*.deb "$dest/root"
  rm -rf "$dest/deb"
  echo "$pkg" >"$dest/.done"
  echo "install-deps: unpacked $pkg into $dest"
}
resolve_kernel() { # prints the concrete linux-image package behind a meta package
  apt-cache depends "$1" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}
kpkg=$(resolve_kernel linux-image-amd64 || true)
if [[ -z "$kpkg" ]]; then apt-get update -qq; kpkg=$(resolve_kernel linux-image-amd64); fi
fetch_kernel "$kpkg" kernel-6.1
# The newer guest of the conformance suite (bookworm-security): virtio, fuse
# and virtiofs are built in there, and it offers the FUSE 7.39+ features a 6.1
# guest never does. WITH_KERNEL_612=0 skips it.
if [[ "${WITH_KERNEL_612:-1}" == 1 ]]; then
  kpkg612=$(resolve_kernel linux-image-6.12-amd64 || true)
  if [[ -z "$kpkg612" ]]; then apt-get update -qq; kpkg612=$(resolve_kernel linux-image-6.12-amd64); fi
  fetch_kernel "$kpkg612" kernel-6.12
fi

# The Rust virtiofsd 1.13 from Debian trixie, the reference the conformance
# suite compares with (ctest conformance_vs_rust) and a peer of the e2e test
# and the benchmark: unpacked into .cache/rust-virtiofsd through a private
# apt list under .cache (this system's apt sources are not touched).
# Idempotent. WITH_RUST_VIRTIOFSD=0 skips it (then those tests skip, or fail
# under CI).
if [[ "${WITH_RUST_VIRTIOFSD:-1}" == 1 ]]; then
  rust_line=$(bash "$ROOT/scripts/fetch-rust-virtiofsd.sh" | tail -n 1)
  rust_version=$("$ROOT/.cache/rust-virtiofsd/lib64/ld-linux-x86-64.so.2" \
    --library-path "$ROOT/.cache/rust-virtiofsd/lib/x86_64-linux-gnu:$ROOT/.cache/rust-virtiofsd/usr/lib/x86_64-linux-gnu" \
    "$ROOT/.cache/rust-virtiofsd/usr/libexec/virtiofsd" --version 2>&1 | head -n 1)
  [[ $rust_version == "virtiofsd 1.13."* ]] ||
    { echo "install-deps: expected the Rust virtiofsd 1.13.x, got '$rust_version' ($rust_line)" >&2; exit 1; }
  echo "install-deps: Rust virtiofsd: $rust_version ($ROOT/.cache/rust-virtiofsd)"
fi

# QEMU 10 from Debian trixie for the live-migration test
# (tests/e2e/run_migration_test.sh: vhost-user-fs migration needs QEMU 8.2 or
# later, bookworm has 7.2): unpacked into .cache/qemu10 through a private apt
# list under .cache (this system's apt sources are not touched) and run by
# scripts/qemu10 (its own glibc, and a mount namespace in which its modules
# and firmware hide 7.2's). Idempotent. WITH_QEMU10=0 skips it (then the
# migration tests skip, or fail under CI).
if [[ "${WITH_QEMU10:-1}" == 1 ]]; then
  qemu10_line=$(bash "$ROOT/scripts/fetch-qemu10.sh" | tail -n 1)
  qemu10_version=$("$ROOT/scripts/qemu10" --version 2>&1 | sed -n 1p)
  [[ $qemu10_version == "QEMU emulator version 10."* ]] ||
    { echo "install-deps: expected QEMU 10.x from scripts/qemu10, got '$qemu10_version' ($qemu10_line)" >&2; exit 1; }
  echo "install-deps: QEMU 10: $qemu10_version ($ROOT/scripts/qemu10)"
fi
