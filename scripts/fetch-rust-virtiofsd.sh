#!/usr/bin/env bash
# Fetches the Rust virtiofsd (the reference we replace) from Debian trixie for
# side-by-side tests and benchmarks, WITHOUT adding trixie to this system's
# apt sources: a private sources list and a private package-list folder, then
# `apt-get download` and `dpkg -x` into .cache/rust-virtiofsd/. It runs with
# its own glibc through its own loader (see tests/e2e/lib.sh):
#   .cache/rust-virtiofsd/lib64/ld-linux-x86-64.so.2 \
#     --library-path .cache/rust-virtiofsd/lib/x86_64-linux-gnu:.cache/rust-virtiofsd/usr/lib/x86_64-linux-gnu \
#     .cache/rust-virtiofsd/usr/libexec/virtiofsd --socket-path=S --shared-dir=D
# Idempotent: does nothing once the binary is there and runs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=$ROOT/.cache/rust-virtiofsd
APT=$ROOT/.cache/rust-virtiofsd-apt
PKGS=(virtiofsd libc6 libseccomp2 libcap-ng0 libgcc-s1)

run_it() {
  "$DEST/lib64/ld-linux-x86-64.so.2" \
    --library-path "$DEST/lib/x86_64-linux-gnu:$DEST/usr/lib/x86_64-linux-gnu" \
    "$DEST/usr/libexec/virtiofsd" "$@"
}

if [[ -x $DEST/usr/libexec/virtiofsd ]] && run_it --version >/dev/null 2>&1; then
  echo "fetch-rust-virtiofsd: already there: $(run_it --version 2>&1 | head -n 1)"
  exit 0
fi

mkdir -p "$APT/lists/partial" "$APT/archives/partial" "$APT/debs"
echo "deb http://deb.debian.org/debian trixie main" >"$APT/sources.list"
apt_opts=(
  -o "Dir::Etc::SourceList=$APT/sources.list"
  -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$APT/lists"
  -o "Dir::Cache::Archives=$APT/archives"
  -o "Dir::Cache::pkgcache=$APT/pkgcache.bin"
  -o "Dir::Cache::srcpkgcache=$APT/srcpkgcache.bin"
  -o APT::Get::List-Cleanup=0
  -o Debug::NoLocking=1
  -o APT::Sandbox::User=root
)
echo "fetch-rust-virtiofsd: reading trixie's package lists (private, $APT)"
apt-get "${apt_opts[@]}" -qq update
rm -f "$APT"/debs/*.deb
(cd "$APT/debs" && apt-get "${apt_opts[@]}" -qq download "${PKGS[@]}")

rm -rf "$DEST"
mkdir -p "$DEST"
for deb in "$APT"/debs/*.deb; do
  echo "fetch-rust-virtiofsd: unpacking $(basename "$deb")"
  dpkg -x "$deb" "$DEST"
done
# Debian 13 is merged-/usr: the loader lives in usr/lib64 with lib64 -> usr/lib64
# in the base-files package, which we do not unpack; provide the links.
for d in lib lib64; do
  if [[ ! -e $DEST/$d && -d $DEST/usr/$d ]]; then ln -s "usr/$d" "$DEST/$d"; fi
done
run_it --version
echo "fetch-rust-virtiofsd: ready in $DEST"
