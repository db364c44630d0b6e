# shellcheck shell=bash
# A private apt: another Debian release's package lists under a folder of
# .cache/, WITHOUT touching this system's apt sources, lists, cache or lock.
# Sourced by scripts/fetch-rust-virtiofsd.sh, scripts/fetch-fio.sh and
# scripts/fetch-qemu10.sh:
#
#   source "$ROOT/scripts/lib/private-apt.sh"
#   private_apt_init "$ROOT/.cache/NAME-apt" "deb http://deb.debian.org/debian trixie main" [LINE]...
#   private_apt_update                 # reads the lists (apt-get update)
#   private_apt_get download PKG...    # any apt-get command
#   private_apt_cache depends PKG      # any apt-cache command
#   private_apt_unpack DEST DEB...     # dpkg -x each, plus the merged-/usr links
#
# private_apt_init sets PRIVATE_APT_DIR and PRIVATE_APT_OPTS (the -o options
# that point apt at that folder) and writes its sources.list.

PRIVATE_APT_DIR=""
PRIVATE_APT_OPTS=()

# private_apt_init DIR SOURCES_LINE...
private_apt_init() {
  PRIVATE_APT_DIR=$1
  shift
  mkdir -p "$PRIVATE_APT_DIR/lists/partial" "$PRIVATE_APT_DIR/archives/partial"
  printf '%s\n' "$@" >"$PRIVATE_APT_DIR/sources.list"
  PRIVATE_APT_OPTS=(
    -o "Dir::Etc::SourceList=$PRIVATE_APT_DIR/sources.list"
    -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$PRIVATE_APT_DIR/lists"
    -o "Dir::Cache::Archives=$PRIVATE_APT_DIR/archives"
    -o "Dir::Cache::pkgcache=$PRIVATE_APT_DIR/pkgcache.bin"
    -o "Dir::Cache::srcpkgcache=$PRIVATE_APT_DIR/srcpkgcache.bin"
    -o APT::Get::List-Cleanup=0
    -o Debug::NoLocking=1
    -o APT::Sandbox::User=root
  )
}

private_apt_get() { apt-get "${PRIVATE_APT_OPTS[@]}" "$@"; }
private_apt_cache() { apt-cache "${PRIVATE_APT_OPTS[@]}" "$@"; }
private_apt_update() { private_apt_get -qq update; }

# private_apt_download FOLDER PKG...: the .debs of PKG... into FOLDER
# (emptied first).
private_apt_download() {
  local folder=$1
  shift
  mkdir -p "$folder"
  rm -f "$folder"/*.deb
  (cd "$folder" && private_apt_get -qq download "$@")
}

# private_apt_unpack DEST DEB...: dpkg -x each package into DEST (with
# PRIVATE_APT_LOG=NAME it prints "NAME: unpacking FILE" for each). Debian 13
# is merged-/usr: the loader lives in usr/lib64 with lib64 -> usr/lib64 (and
# lib -> usr/lib) in the base-files package, which is not unpacked; the links
# are provided here.
private_apt_unpack() {
  local dest=$1 deb d
  shift
  mkdir -p "$dest"
  for deb in "$@"; do
    [[ -n ${PRIVATE_APT_LOG:-} ]] && echo "$PRIVATE_APT_LOG: unpacking $(basename "$deb")"
    dpkg -x "$deb" "$dest"
  done
  for d in lib lib64; do
    if [[ ! -e $dest/$d && -d $dest/usr/$d ]]; then ln -s "usr/$d" "$dest/$d"; fi
  done
}
