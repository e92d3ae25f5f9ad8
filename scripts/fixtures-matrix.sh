#!/usr/bin/env bash
# Builds (or finds cached) every Go fixture the tests use, one line per build:
#   ok|FAIL|SKIP  GOVERSION GOARCH VARIANT PROGRAM  path-or-reason
# Goes on past failures; exits non-zero if any build failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
versions=(1.15 1.19 1.21 1.22 1.23 1.24 1.25 1.26 1.27)
newest=${versions[${#versions[@]}-1]}

# "VERSION ARCH VARIANT PROGRAM" for every build.
builds=()
# The analysis matrix (crates/goelf/tests/matrix.rs, BUILDS) checks every one of these for
# every version; keep the two lists the same.
for v in "${versions[@]}"; do
  for var in exe pie exe-sw pie-strip exe-objcopy cgo cgo-pie cgo-strip cgo-pie-strip; do
    builds+=("$v amd64 $var tlsfixture")
  done
  for var in exe pie pie-strip; do builds+=("$v arm64 $var tlsfixture"); done
done
for v in 1.15 1.19 "$newest"; do builds+=("$v amd64 exe notls"); done
# Writes growing their stack at Write's own check (crates/tlstap/tests/capture.rs).
for v in 1.15 1.19 "$newest"; do builds+=("$v amd64 exe stackgrow"); done
# HTTP decoding and the h2 header hooks (crates/tlstap/tests/http.rs, crates/goelf/tests/h2.rs):
# Go 1.15 (stack ABI), 1.19, and the newest, stripped too.
builds+=("1.15 amd64 exe httpfixture" "1.19 amd64 exe httpfixture" "1.19 amd64 pie-strip httpfixture")
builds+=("$newest amd64 exe httpfixture" "$newest amd64 exe-sw httpfixture" "$newest amd64 pie-strip httpfixture")
# gRPC decoding: Go 1.19 only, the Go whose GOPATH mode builds against Debian's grpc-go
# (golang-google-grpc-dev, 1.33.3), plain and stripped.
builds+=("1.19 amd64 exe grpcfixture" "1.19 amd64 pie-strip grpcfixture")
builds+=("$newest amd64 exe oddconn" "$newest 386 exe tlsfixture" "$newest riscv64 exe tlsfixture" "$newest amd64 c-shared tlsfixture")

# Combinations that cannot work, with the reason (none known today; e.g.
# ["1.15 arm64 cgo"]="why"). Matched on "VERSION ARCH VARIANT".
declare -A skip=()

failed=0
for b in "${builds[@]}"; do
  read -r v arch var prog <<<"$b"
  if [[ -n ${skip["$v $arch $var"]:-} ]]; then
    printf 'SKIP  %-5s %-5s %-9s %-10s %s\n' "$v" "$arch" "$var" "$prog" "${skip["$v $arch $var"]}"
    continue
  fi
  start=$SECONDS
  if out=$("$here/fixture.sh" "$v" "$var" "$prog" "$arch" 2>&1); then
    printf 'ok    %-5s %-5s %-9s %-10s %s (%ds)\n' "$v" "$arch" "$var" "$prog" "$out" $((SECONDS - start))
  else
    printf 'FAIL  %-5s %-5s %-9s %-10s %s\n' "$v" "$arch" "$var" "$prog" "$(tail -n1 <<<"$out")"
    failed=$((failed + 1))
  fi
done
echo "fixtures: ${#builds[@]} listed, $failed failed"
((failed == 0))
