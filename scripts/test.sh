#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, as root: installs build and test
# dependencies, builds (or reuses from ~/.cache/tlstap) the Go toolchains and fixtures,
# then runs every test, the privileged BPF tests included, then the privileged set again on
# other kernels under qemu (scripts/kernel-matrix.sh; kernels cached in ~/.cache/tlstap).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/deps.sh --test
export PATH="$HOME/.cargo/bin:$PATH"
# Build the fixture matrix up front so test time is test time (cached across runs).
bash scripts/fixtures-matrix.sh
# Under CI a privileged test that cannot run is a failure, not a skip.
if [[ ${CI:-} == true ]]; then export TLSTAP_REQUIRE_PRIVILEGED=1; fi
# Style and lints first: they fail in seconds, the suite takes minutes.
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --all -- --check; else echo "style: rustfmt not installed, not checked" >&2; fi
if cargo clippy --version >/dev/null 2>&1; then
    cargo clippy --workspace --all-targets --locked -- -D warnings
else
    echo "lints: clippy not installed, not checked" >&2
fi
status=0
# goelf's fuzz target (its own workspace, which the build above never sees), built on stable
# and run for a fixed slice from the crafted seeds (TLSTAP_FUZZ_TIME seconds, default 60): a
# crash, panic, timeout (10 s per input) or OOM (RLIMIT_AS 2 GiB) fails the run. bench/fuzz
# runs it for 10^6 executions.
if ! bash scripts/fuzz.sh --time "${TLSTAP_FUZZ_TIME:-60}"; then
  echo "fuzz: goelf failed on an input (kept in target/fuzz-work/artifacts/)" >&2
  status=1
fi
# A hung test must fail the run with a message, not use up CI's time limit.
rm -rf target/tmp/measurements
timeout --kill-after=60 "${TLSTAP_TEST_TIMEOUT:-45m}" cargo test --workspace --locked "$@" || status=$((status ? status : $?))
# What tests measured without judging (e.g. what host-wide capture misses without --catch-exec).
for m in target/tmp/measurements/*.txt; do [[ -e $m ]] && { echo "measurement ($m):"; cat "$m"; }; done
if [[ $status == 124 ]]; then echo "tests: still running after ${TLSTAP_TEST_TIMEOUT:-45m}; stopped" >&2; fi
# The kernel matrix: the privileged set (scripts/kernel-tests.sh) on Debian's 5.10, 6.1 and
# 6.12 kernels booted under qemu, and on this one (about 25 min with two kernels at once).
# TLSTAP_KERNEL_MATRIX=0 leaves it out of a quick local run; CI always runs it.
if [[ $status == 0 && (${CI:-} == true || ${TLSTAP_KERNEL_MATRIX:-1} != 0) ]]; then
  bash scripts/deps.sh --kernels
  bash scripts/kernel-matrix.sh 5.10 6.1 6.12 host || status=$?
fi
exit "$status"
