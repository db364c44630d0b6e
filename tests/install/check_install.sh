#!/usr/bin/env bash
# What `cmake --install` lays down, checked as libvirt and lima would read it:
# the binary in libexec/, the man page (naming every option --help lists),
# and the vhost-user descriptor in share/qemu/vhost-user/ whose "type" is
# "fs", whose "binary" is the installed daemon, and whose features are those
# the binary prints with --print-capabilities (libvirt runs it).
#
#   check_install.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR}
command -v jq >/dev/null || { echo "jq missing (scripts/install-deps.sh)" >&2; exit 1; }
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
DESTDIR=$stage cmake --install "$build" >/dev/null
prefix=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$build/CMakeCache.txt")
fail=0
check() { # description command...
  local d=$1
  shift
  if "$@"; then echo "PASS $d"; else echo "FAIL $d"; fail=1; fi
}
bin=$stage$prefix/libexec/virtiofsd
check "binary in libexec/" test -x "$bin"
man=$stage$prefix/share/man/man1/virtiofsd.1
check "man page in share/man/man1/" test -f "$man"
# Every long option of --help appears in the man page (roff writes '-' as '\-').
missing=""
for opt in $("$bin" --help | grep -o -- '--[a-z][a-z0-9-]*' | sort -u); do
  [[ $opt == --help || $opt == --version ]] && continue
  grep -qF -- "${opt//-/\\-}" "$man" || missing+=" $opt"
done
check "the man page names every option of --help${missing:+ (missing:$missing)}" test -z "$missing"
# libvirt: $prefix/share/qemu/vhost-user/*.json, sorted by name; only "type"
# and "binary" are read, the features come from --print-capabilities.
descriptors=("$stage$prefix"/share/qemu/vhost-user/*.json)
check "one descriptor in share/qemu/vhost-user/" test "${#descriptors[@]}" -eq 1 -a -f "${descriptors[0]}"
desc=${descriptors[0]}
check "the descriptor is JSON with type \"fs\"" test "$(jq -r .type "$desc" 2>/dev/null)" = fs
binary=$(jq -r .binary "$desc" 2>/dev/null || true)
check "its binary ($binary) is the installed daemon" test "$binary" = "$prefix/libexec/virtiofsd" -a -x "$stage$binary"
caps=$("$bin" --print-capabilities)
check "--print-capabilities is JSON with type \"fs\"" test "$(jq -r .type <<<"$caps" 2>/dev/null)" = fs
check "the descriptor's features are --print-capabilities' features" \
  test "$(jq -cS .features "$desc")" = "$(jq -cS .features <<<"$caps")"
check "separate-options is offered (libvirt then passes --shared-dir, not -o)" \
  test "$(jq -r '.features | index("separate-options") != null' <<<"$caps")" = true
exit $fail
