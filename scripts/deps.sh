#!/usr/bin/env bash
# Installs what building tlstap needs on Debian 12 (as root): clang for the BPF programs,
# libelf/zlib/pkg-config for the vendored libbpf. With --test, also what the tests need:
# Debian's Go (fixtures), tshark, curl, hey, bpftool, iproute2 (tc, netns) and libpcap (pcap-mode
# filters). Idempotent and quiet when all is there.
set -euo pipefail
pkgs=(clang llvm libelf-dev zlib1g-dev pkg-config make gcc)
if [[ ${1:-} == --test ]]; then
  pkgs+=(golang-go golang-1.19-go tshark curl openssl hey bpftool util-linux python3-pip binutils iproute2 libpcap0.8)
fi
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
