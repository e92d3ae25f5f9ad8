#!/usr/bin/env bash
# Usage: scripts/debian-binary.sh PACKAGE PATH-IN-PACKAGE
# Prints the absolute path of a program from Debian's archive, unpacked (never installed) under
# ${TLSTAP_CACHE:-$HOME/.cache/tlstap}/x/PACKAGE: real, distro-built (stripped) Go binaries for
# tests and benchmarks. Downloads the package with `apt-get download` when not cached.
set -euo pipefail
pkg=${1:-} rel=${2:-}
die() { echo "debian-binary.sh: $pkg: $*" >&2; exit 1; }
[[ -n $pkg && -n $rel ]] || die "usage: debian-binary.sh PACKAGE PATH-IN-PACKAGE"
cache=${TLSTAP_CACHE:-$HOME/.cache/tlstap}
dest=$cache/x/$pkg
if [[ ! -x $dest/$rel ]]; then
  debs=$cache/debs
  mkdir -p "$debs"
  # _apt cannot write into root's cache: the download runs unsandboxed, quietly.
  (cd "$debs" && { apt-get download "$pkg" || { apt-get update && apt-get download "$pkg"; }; }) >/dev/null 2>&1 ||
    die "apt-get download failed"
  deb=$(ls "$debs/${pkg}"_*.deb 2>/dev/null | sort | tail -n1)
  [[ -n $deb ]] || die "no .deb downloaded"
  mkdir -p "$dest.tmp" && dpkg-deb -x "$deb" "$dest.tmp" && rm -rf "$dest" && mv "$dest.tmp" "$dest"
  [[ -x $dest/$rel ]] || die "$rel is not in the package"
fi
echo "$dest/$rel"
