#!/usr/bin/env bash
# Fetches the Rust virtiofsd (the reference we replace) from Debian trixie for
# side-by-side tests and benchmarks, WITHOUT adding trixie to this system's
# apt sources: a private sources list and a private package-list folder
# (scripts/lib/private-apt.sh), then `apt-get download` and `dpkg -x` into
# .cache/rust-virtiofsd/. It runs with its own glibc through its own loader (see tests/e2e/lib.sh):
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

# shellcheck source=lib/private-apt.sh
source "$ROOT/scripts/lib/private-apt.sh"
private_apt_init "$APT" "deb http://deb.debian.org/debian trixie main"
echo "fetch-rust-virtiofsd: reading trixie's package lists (private, $APT)"
private_apt_update
private_apt_download "$APT/debs" "${PKGS[@]}"

rm -rf "$DEST"
PRIVATE_APT_LOG=fetch-rust-virtiofsd private_apt_unpack "$DEST" "$APT"/debs/*.deb
run_it --version
echo "fetch-rust-virtiofsd: ready in $DEST"
