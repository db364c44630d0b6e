#!/usr/bin/env bash
# Fetches QEMU 10 (qemu-system-x86 from Debian trixie) for the live-migration
# test (tests/e2e/run_migration_test.sh): vhost-user-fs migration needs QEMU
# 8.2 or later, Debian 12 has 7.2. WITHOUT adding trixie to this system's apt
# sources: a private sources list and package-list folder under
# .cache/qemu10-apt (scripts/lib/private-apt.sh), `apt-get download` of the
# packages below and `dpkg -x` into .cache/qemu10/. Nothing is installed.
#
# It runs through scripts/qemu10, never directly: trixie's own loader and
# libraries (usr/lib64/ld-linux-x86-64.so.2 --library-path ...), in a private
# mount namespace where trixie's module and firmware folders are bind-mounted
# over the system's (QEMU looks for them at the paths it was built with, which
# hold QEMU 7.2's modules and firmware here).
#
# Idempotent: does nothing once .cache/qemu10 holds exactly the package list
# below and `scripts/qemu10 --version` says QEMU 10.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=$ROOT/.cache/qemu10
APT=$ROOT/.cache/qemu10-apt

# The list, resolved against trixie's lists (apt-cache depends --recurse on
# qemu-system-x86, then trimmed with the loader: `ld-linux --list` on the
# binary and on every module until no library is "not found", and only the
# packages whose libraries are actually loaded kept). Essential packages of a
# full install (passwd, debconf, ...) are not needed to run it.
PKGS=(
  # QEMU: the binary; its loadable modules (audio, curses, USB, virtio-gpu,
  # under usr/lib/x86_64-linux-gnu/qemu) and trace-events-all; linuxboot_dma,
  # kvmvapic, keymaps, vgabios links (usr/share/qemu); SeaBIOS
  # (usr/share/seabios/bios-256k.bin, the x86 BIOS); iPXE option ROMs (a NIC's
  # romfile: not used by the tests, which have no NIC, but a Depends).
  qemu-system-x86 qemu-system-common qemu-system-data seabios ipxe-qemu
  # trixie's glibc 2.41 and its loader usr/lib64/ld-linux-x86-64.so.2
  # (QEMU 10 needs symbols newer than bookworm's 2.36): libc, libm.
  libc6
  # Libraries of qemu-system-x86_64 itself (soname in parentheses).
  libaio1t64          # libaio.so.1t64
  libatomic1          # libatomic.so.1 (via glib)
  libblkid1           # libblkid.so.1 (via libmount)
  libbpf1             # libbpf.so.1 (ebpf RSS)
  libcap2             # libcap.so.2 (via libudev)
  libcapstone5        # libcapstone.so.5 (disassembler)
  libdaxctl1          # libdaxctl.so.1 (via libpmem)
  libelf1t64          # libelf.so.1 (via libbpf)
  libfdt1             # libfdt.so.1
  libffi8             # libffi.so.8 (via gobject, p11-kit)
  libfuse3-4          # libfuse3.so.4 (block export)
  libglib2.0-0t64     # libglib/gio/gobject/gmodule-2.0.so.0
  libgmp10            # libgmp.so.10
  libgnutls30t64      # libgnutls.so.30
  libhogweed6t64      # libhogweed.so.6
  libibverbs1         # libibverbs.so.1 (RDMA migration)
  libidn2-0           # libidn2.so.0 (via gnutls)
  libjpeg62-turbo     # libjpeg.so.62 (VNC)
  libkmod2            # libkmod.so.2 (via libndctl)
  libmount1           # libmount.so.1 (via gio)
  libndctl6           # libndctl.so.6 (via libpmem)
  libnettle8t64       # libnettle.so.8
  libnl-3-200         # libnl-3.so.200 (via libibverbs)
  libnl-route-3-200   # libnl-route-3.so.200 (via libibverbs)
  libnuma1            # libnuma.so.1
  libp11-kit0         # libp11-kit.so.0 (via gnutls)
  libpcre2-8-0        # libpcre2-8.so.0 (via glib, selinux)
  libpixman-1-0       # libpixman-1.so.0
  libpmem1            # libpmem.so.1
  libpng16-16t64      # libpng16.so.16 (VNC)
  librdmacm1t64       # librdmacm.so.1 (RDMA migration)
  libsasl2-2          # libsasl2.so.2 (VNC)
  libseccomp2         # libseccomp.so.2 (-sandbox)
  libselinux1         # libselinux.so.1 (via gio, libmount)
  libslirp0           # libslirp.so.0 (user networking)
  libssl3t64          # libcrypto.so.3 (via libkmod, libsasl2)
  libtasn1-6          # libtasn1.so.6 (via gnutls)
  libudev1            # libudev.so.1
  libunistring5       # libunistring.so.5 (via gnutls, libidn2)
  liburing2           # liburing.so.2
  libuuid1            # libuuid.so.1 (via libndctl, libdaxctl)
  libvdeplug2t64      # libvdeplug.so.2
  libzstd1            # libzstd.so.1
  zlib1g              # libz.so.1
  # Libraries only the modules of qemu-system-common load (`-device help`
  # and `-audiodev help` load every module, so they must all resolve).
  libasound2t64       # libasound.so.2 (audio-alsa.so)
  libbrlapi0.8        # libbrlapi.so.0.8 (chardev-baum.so)
  libsystemd0         # libsystemd.so.0 (via libbrlapi)
  libcacard0          # libcacard.so.0 (hw-usb-smartcard.so)
  libnspr4            # libnspr4/libplc4/libplds4.so (via libcacard)
  libnss3             # libnss3/libnssutil3.so (via libcacard)
  libpcsclite1        # libpcsclite.so.1 (via libcacard)
  libncursesw6        # libncursesw.so.6 (ui-curses.so)
  libtinfo6           # libtinfo.so.6 (ui-curses.so, via libncursesw)
  libusb-1.0-0        # libusb-1.0.so.0 (hw-usb-host.so)
  libusbredirparser1t64 # libusbredirparser.so.1 (hw-usb-redirect.so)
)

LAUNCHER=$ROOT/scripts/qemu10
stamp=$DEST/.packages
want=$(printf '%s\n' "${PKGS[@]}")
is_ready() {
  [[ -f $stamp && "$(cat "$stamp")" == "$want" ]] &&
    "$LAUNCHER" --version 2>/dev/null | head -n 1 | grep -q '^QEMU emulator version 10\.'
}
if is_ready; then
  echo "fetch-qemu10: already there: $("$LAUNCHER" --version | head -n 1) ($DEST)"
  exit 0
fi

# shellcheck source=lib/private-apt.sh
source "$ROOT/scripts/lib/private-apt.sh"
private_apt_init "$APT" "deb http://deb.debian.org/debian trixie main"
echo "fetch-qemu10: reading trixie's package lists (private, $APT)"
private_apt_update
private_apt_download "$APT/debs" "${PKGS[@]}"

rm -rf "$DEST"
private_apt_unpack "$DEST" "$APT"/debs/*.deb
echo "fetch-qemu10: unpacked ${#PKGS[@]} packages into $DEST"

# Every library of the binary and of every module must come from this tree.
missing=$(
  for elf in "$DEST"/usr/bin/qemu-system-x86_64 "$DEST"/usr/lib/x86_64-linux-gnu/qemu/*.so; do
    "$DEST/usr/lib64/ld-linux-x86-64.so.2" --library-path "$DEST/usr/lib/x86_64-linux-gnu" \
      --list "$elf" 2>&1 | sed -n "s|^\s*\(.*not found.*\)|$(basename "$elf"): \1|p"
  done
)
if [[ -n $missing ]]; then
  echo "fetch-qemu10: libraries not found in $DEST (extend PKGS):" >&2
  echo "$missing" >&2
  exit 1
fi
echo "$want" >"$stamp"
is_ready || { echo "fetch-qemu10: $LAUNCHER --version does not print QEMU 10:" >&2; "$LAUNCHER" --version >&2; exit 1; }
echo "fetch-qemu10: ready: $("$LAUNCHER" --version | head -n 1) ($DEST, run it with $LAUNCHER)"
