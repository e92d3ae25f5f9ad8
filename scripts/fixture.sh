#!/usr/bin/env bash
# Usage: scripts/fixture.sh GOVERSION VARIANT PROGRAM [GOARCH]
#   GOVERSION: as for go-toolchain.sh (1.15, 1.19, 1.21 ... 1.27, or exact)
#   VARIANT:   exe pie exe-sw pie-sw exe-strip pie-strip exe-objcopy cgo cgo-pie cgo-strip
#              cgo-pie-strip c-shared (a shared library: tlstap refuses it)
#   PROGRAM:   a directory under testdata/go (tlsfixture, notls, httpfixture, grpcfixture)
#   GOARCH:    amd64 (default) or arm64; 386 and riscv64 (exe only) as ports tlstap refuses
# Prints only the absolute path of the built binary; builds it unless cached in
# ${TLSTAP_CACHE:-$HOME/.cache/tlstap}/fixtures/VER/ARCH/VARIANT/HASH/PROGRAM, where
# HASH covers the program's sources, the variant, the exact Go and this script's version.
# The sources need no go.mod (GOPATH mode), so one source tree builds with Go 1.13+.
set -euo pipefail
SCRIPT_VERSION=2   # bump to invalidate every cached fixture

ver=${1:-} variant=${2:-} prog=${3:-} arch=${4:-amd64}
die() { # one line on stderr; a build log is kept next to where the binary would be
  local msg="fixture.sh: go$ver $arch $variant $prog: $*"
  if [[ -s ${log:-} ]]; then cp "$log" "$outdir/build.log"; msg+=" (log: $outdir/build.log)"; fi
  echo "$msg" >&2; exit 1; }
[[ -n $ver && -n $variant && -n $prog ]] || die "usage: fixture.sh GOVERSION VARIANT PROGRAM [GOARCH]"
here=$(cd "$(dirname "$0")" && pwd)
src=$here/../testdata/go/$prog
[[ -d $src && $prog != */* ]] || die "no program testdata/go/$prog"
cache=${TLSTAP_CACHE:-$HOME/.cache/tlstap}

# Per-variant build flags; cgo variants link externally with the cgo resolver.
flags=() cgo=0 strip=0
case $variant in
  exe)       ;;
  pie)       flags=(-buildmode=pie) ;;
  exe-sw)    flags=(-ldflags=-s\ -w) ;;
  pie-sw)    flags=(-buildmode=pie -ldflags=-s\ -w) ;;
  exe-strip) flags=(-ldflags=-s\ -w) strip=1 ;;
  pie-strip) flags=(-buildmode=pie -ldflags=-s\ -w) strip=1 ;;
  exe-objcopy) flags=(-ldflags=-s\ -w) strip=2 ;;
  cgo)       flags=(-tags=netcgo -ldflags=-linkmode=external) cgo=1 ;;
  cgo-pie)   flags=(-buildmode=pie -tags=netcgo -ldflags=-linkmode=external) cgo=1 ;;
  c-shared)  flags=(-buildmode=c-shared) cgo=1 ;;
  cgo-strip) flags=(-tags=netcgo "-ldflags=-linkmode=external -s -w") cgo=1 strip=1 ;;
  cgo-pie-strip) flags=(-buildmode=pie -tags=netcgo "-ldflags=-linkmode=external -s -w") cgo=1 strip=1 ;;
  *) die "unknown variant (want exe pie exe-sw pie-sw exe-strip pie-strip exe-objcopy cgo cgo-pie cgo-strip cgo-pie-strip c-shared)" ;;
esac
case $arch in
  amd64) triplet=x86_64-linux-gnu ;;
  arm64) triplet=aarch64-linux-gnu ;;
  # Ports tlstap refuses, built to test that it says so: plain builds only.
  386|riscv64)
    [[ $variant == exe ]] || die "only the exe variant is built for GOARCH=$arch"
    triplet=none ;;
  *) die "unsupported GOARCH (want amd64 or arm64; 386 and riscv64 as refused examples)" ;;
esac
host=$([[ $(uname -m) == x86_64 ]] && echo amd64 || echo arm64)
cc=gcc
if ((cgo)) && [[ $arch != "$host" ]]; then
  cc=$triplet-gcc
  command -v "$cc" >/dev/null || die "cgo for $arch needs $cc (apt-get install gcc-$triplet)"
fi

errf=$(mktemp)
goroot=$(bash "$here/go-toolchain.sh" "$ver" 2>"$errf") ||
  { e=$(tail -n1 "$errf"); rm -f "$errf"; die "no Go toolchain: ${e#go-toolchain.sh: }"; }
rm -f "$errf"
gover=$(GOTOOLCHAIN=local GOROOT=$goroot "$goroot/bin/go" version)
hash=$( { echo "$SCRIPT_VERSION $variant $arch $gover"
          cd "$src" && find . -type f | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -c1-16)
outdir=$cache/fixtures/$ver/$arch/$variant/$hash
out=$outdir/$prog
if [[ -x $out ]]; then echo "$out"; exit 0; fi

# Build in a private GOPATH under the cache; move the result into place atomically.
mkdir -p "$outdir" "$cache/fixtures/.tmp"
work=$(mktemp -d "$cache/fixtures/.tmp/$prog.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/gopath/src"
cp -r "$src" "$work/gopath/src/$prog"
log=$work/build.log  # copied next to the binary's place on failure
# Go >= 1.21: add a go.mod saying `go 1.N` so the binary gets that release's own
# defaults, as a real program would (GOPATH mode pins DefaultGODEBUG to Go 1.20
# behaviour, e.g. tlsmlkem=0: no ML-KEM key share). Older Go: plain GOPATH mode.
# GOPATH mode also sees Debian's Go packages (/usr/share/gocode: grpc-go for grpcfixture,
# from scripts/deps.sh --test); HASH covers only the program's own sources.
modules=off goflags=-trimpath minor=$(sed -E 's/^go version go1\.([0-9]+).*/\1/' <<<"$gover")
gopath=$work/gopath:/usr/share/gocode
if ((minor >= 21)); then
  printf 'module %s\n\ngo 1.%s\n' "$prog" "$minor" >"$work/gopath/src/$prog/go.mod"
  modules=on goflags="-trimpath -buildvcs=false" gopath=$work/gopath
fi
if ! (cd "$work/gopath/src/$prog" &&
      env GOROOT="$goroot" GOPATH="$gopath" GOCACHE="$cache/gocache/$ver-$arch" \
          GO111MODULE=$modules GOTOOLCHAIN=local GOENV=off GOFLAGS="$goflags" GOPROXY=off \
          GOOS=linux GOARCH="$arch" CGO_ENABLED=$cgo CC="$cc" \
          "$goroot/bin/go" build "${flags[@]}" -o "$work/$prog" .) >"$log" 2>&1; then
  die "go build ${flags[*]} failed: $(grep -v '^#' "$log" | head -n1)"
fi
if ((strip)); then
  # Host binaries: strip; foreign ones: the cross strip (host objcopy cannot read
  # them), installed from Debian's binutils-<triplet> when missing.
  s=(strip --strip-all)
  ((strip == 2)) && s=(objcopy --strip-all)
  if [[ $arch != "$host" ]]; then
    s=("$triplet-strip" --strip-all)
    command -v "${s[0]}" >/dev/null || { apt-get install -y "binutils-$triplet" ||
      { apt-get update && apt-get install -y "binutils-$triplet"; }; } >"$log" 2>&1 ||
      die "cannot install binutils-$triplet for ${s[0]}"
  fi
  "${s[@]}" "$work/$prog" >"$log" 2>&1 || die "${s[*]} failed: $(head -n1 "$log")"
fi
mv -f "$work/$prog" "$out"
echo "$out"
