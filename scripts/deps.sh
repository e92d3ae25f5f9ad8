#!/usr/bin/env bash
# Installs what building tlstap needs on Debian 12 (as root): clang for the BPF programs,
# libelf/zlib/pkg-config for the vendored libbpf. With --test, also what the tests need:
# Debian's Go (fixtures) and grpc-go (grpcfixture), gccgo (a refused build), tshark, curl, hey,
# bpftool, iproute2 (tc, netns), libpcap (pcap-mode filters) and g++ (libFuzzer, for goelf's
# fuzz target). With --kernels, also what
# scripts/kernel-matrix.sh needs to boot Debian's 5.10/6.1/6.12 kernels under qemu (TCG): qemu,
# a static busybox and cpio for the initramfs, xz/zstd for compressed modules, kmod (depmod,
# modprobe). Flags combine. Idempotent and quiet when all is there.
set -euo pipefail
pkgs=(clang llvm libelf-dev zlib1g-dev pkg-config make gcc)
for flag in "$@"; do
  case $flag in
    --test) pkgs+=(golang-go golang-1.19-go golang-google-grpc-dev gccgo tshark curl openssl hey bpftool util-linux python3-pip binutils iproute2 libpcap0.8 g++) ;;
    --kernels) pkgs+=(qemu-system-x86 busybox-static cpio zstd xz-utils kmod) ;;
    *) echo "deps.sh: unknown flag $flag (--test, --kernels)" >&2; exit 2 ;;
  esac
done
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "deps.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # tshark asks whether non-root users may capture; answer once, non-interactively.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Rust: Debian's rustc (1.63) is too old for this workspace; a fresh machine gets stable from
# rustup, with rustfmt and clippy (test.sh checks style and lints). Callers put ~/.cargo/bin on PATH.
if ! command -v cargo >/dev/null 2>&1 && [[ ! -x $HOME/.cargo/bin/cargo ]]; then
  echo "deps.sh: installing Rust (stable) with rustup into ~/.cargo" >&2
  command -v curl >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends curl ca-certificates >/dev/null
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
    sh -s -- -y --no-modify-path --profile minimal --default-toolchain stable -c rustfmt -c clippy
fi
