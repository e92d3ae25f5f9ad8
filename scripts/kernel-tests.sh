#!/usr/bin/env bash
# The privileged tests scripts/kernel-matrix.sh runs on each kernel: a reduced set of the
# suite (a kernel under qemu's TCG runs them about ten times slower) that still covers every
# job on the running kernel's own paths:
#   text capture, writes and reads byte-exact, both Go ABIs (1.15 stack, 1.27 register), and
#   calls of many chunks; every fallback forced where the kernel has the feature
#   (tests/fallbacks.rs); keylog against curl and tshark; pcap mode decrypted by tshark, its
#   loss counters and its clsact cleanup after SIGKILL; host-wide discovery with
#   --catch-exec; loss counters of the capture; the TC program on tcx or clsact.
#
#   scripts/kernel-tests.sh --build   on the host: builds the test binaries and lists them in
#                                     target/kernel-matrix/binaries (guests cannot run cargo:
#                                     they see the host's files read-only)
#   scripts/kernel-tests.sh           runs the set on the running kernel, one test at a time;
#                                     ends with "N passed, N failed" and fails if any failed
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
list=target/kernel-matrix/binaries

# A test target (its crate's directory/cargo's target name), then the exact names of its tests.
SET=(
  "tlstap/capture go1_15_stack_abi per_offset_links_capture_the_same unix_socket_connection"
  "tlstap/fallbacks each_fallback_path_is_byte_exact all_fallbacks_together_on_both_abis secrets_on_the_oldest_path_match_curl without_kernel_btf_the_btf_file_is_used perf_buffer_loss_is_counted_and_marked dry_run_names_the_kernel_paths a_missing_required_feature_is_one_clear_line a_call_of_many_blocks_is_byte_exact_without_bpf_loop"
  "tlstap/complete big_bodies_in_one_write_are_byte_exact loss_is_counted_and_marked"
  "tlstap/keylog keylog_newest_and_oldest_decrypts_a_tshark_capture"
  "tlstap/pcap pcap_hooked_server_decrypts_tls13_and_tls12_and_leaves_others_out pcap_loss_is_counted_and_the_file_stays_valid clsact_left_by_a_killed_tlstap_is_removed_at_the_next_start"
  "tlstap/discovery catch_exec_captures_new_processes_from_their_first_byte catch_exec_on_the_oldest_kernel_paths nothing_is_left_in_the_kernel_after_exit"
  "tlstap-bpf/tlstap_bpf packets::tests::captures_on_lo_with_tcx_and_clsact"
)

if [[ ${1:-} == --build ]]; then
  mkdir -p target/kernel-matrix
  # Every test executable cargo builds: "CRATE/TARGET PATH" lines.
  cargo test --workspace --locked --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") and m.get("executable"):
        crate = m["manifest_path"].rsplit("/", 2)[-2]
        print(crate + "/" + m["target"]["name"], m["executable"])
' >"$list.new" && mv "$list.new" "$list"
  exit $?
fi

[[ -s $list ]] || { echo "kernel-tests: run scripts/kernel-tests.sh --build on the host first" >&2; exit 2; }
# A privileged test that cannot run is a failure here: this is what the matrix is for.
export TLSTAP_REQUIRE_PRIVILEGED=1
# Under qemu's TCG (kernel-matrix.sh sets KERNEL_MATRIX) everything runs about ten times
# slower, the kernel's verifier included: the tests wait that much longer.
if [[ -n ${KERNEL_MATRIX:-} ]]; then export TLSTAP_TEST_TIME_SCALE=${TLSTAP_TEST_TIME_SCALE:-10}; fi
echo "kernel-tests: $(uname -r)"
passed=0 failed=0
for entry in "${SET[@]}"; do
  read -r target tests <<<"$entry"
  exe=$(awk -v t="$target" '$1 == t { print $2; exit }' "$list")
  if [[ -z $exe ]]; then
    echo "kernel-tests: no test binary named $target in $list" >&2
    failed=$((failed + 1))
    continue
  fi
  for t in $tests; do
    start=$SECONDS
    # One at a time: tests of one binary share `lo` (clsact on kernels without tcx).
    if out=$(timeout --kill-after=30 "${TLSTAP_KERNEL_TEST_TIMEOUT:-30m}" "$exe" --exact --test-threads=1 "$t" 2>&1) &&
       grep -q "test result: ok. 1 passed" <<<"$out"; then
      passed=$((passed + 1))
      echo "kernel-tests: ok    $target::$t ($((SECONDS - start))s)"
    else
      failed=$((failed + 1))
      echo "kernel-tests: FAIL  $target::$t ($((SECONDS - start))s)"
      tail -n 40 <<<"$out" | sed 's/^/    /'
    fi
  done
done
echo "kernel-tests on $(uname -r):"
echo "kernel-tests: $passed passed, $failed failed"
((failed == 0))
