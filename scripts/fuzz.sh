#!/usr/bin/env bash
# Usage: scripts/fuzz.sh [--runs N | --time SECONDS] [--fixtures] [--work DIR] [-- LIBFUZZER_ARGS...]
# Runs goelf's fuzz target (crates/goelf/fuzz, target `parse`) on stable Rust, bounded in time
# and memory per input; exits non-zero on any crash, panic, timeout or OOM (libFuzzer's own
# status), leaving the input in WORK/artifacts. Used by scripts/test.sh (a short slice) and
# bench/fuzz (the long run).
# - cargo-fuzz is installed once per version under ~/.cache/tlstap/cargo-fuzz/VERSION.
# - RUSTC_BOOTSTRAP=1 lets stable rustc take the -Z flags cargo-fuzz passes (sanitizer
#   coverage); no nightly toolchain is needed.
# - Built without AddressSanitizer (-s none): goelf is safe Rust, and ASan reserves terabytes
#   of shadow address space, which an RLIMIT_AS cannot coexist with. Debug assertions are on
#   (-a): an integer overflow is a panic, hence a failure, as in the test builds.
# - Limits: -timeout (seconds per input), -rss_limit_mb and -malloc_limit_mb (libFuzzer; the
#   malloc limit only acts where a sanitizer runtime provides malloc hooks, so not here), and
#   RLIMIT_AS via prlimit, which turns any allocation past it into an abort: a crash.
# - Seeds: crafted files from `cargo run --example fuzz-seeds` and, with --fixtures, real Go
#   fixtures (scripts/fixture.sh). WORK/corpus keeps what the run found.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
CARGO_FUZZ_VERSION=0.13.2
runs="" secs="" fixtures=0 work="$root/target/fuzz-work"
: "${FUZZ_TIMEOUT:=10}" "${FUZZ_RSS_MB:=1024}" "${FUZZ_MALLOC_MB:=512}" "${FUZZ_AS_MB:=2048}"
while (($#)); do
  case $1 in
    --runs) runs=$2; shift 2 ;;
    --time) secs=$2; shift 2 ;;
    --fixtures) fixtures=1; shift ;;
    --work) work=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "fuzz.sh: unknown argument $1 (see the usage at the top of the script)" >&2; exit 2 ;;
  esac
done
[[ -n $runs || -n $secs ]] || secs=60
export PATH="$HOME/.cargo/bin:$PATH"
cache=${TLSTAP_CACHE:-$HOME/.cache/tlstap}
install_root=$cache/cargo-fuzz/$CARGO_FUZZ_VERSION
if [[ ! -x $install_root/bin/cargo-fuzz ]]; then
  echo "fuzz.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION into $install_root (once)" >&2
  cargo install -q --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$install_root"
fi
target_dir=${CARGO_TARGET_DIR:-$root/target}
(cd "$root/crates/goelf/fuzz" && RUSTC_BOOTSTRAP=1 "$install_root/bin/cargo-fuzz" build -s none -a \
  --target-dir "$target_dir/fuzz" parse)
bin=$target_dir/fuzz/$(rustc -vV | sed -n 's/^host: //p')/release/parse
[[ -x $bin ]] || { echo "fuzz.sh: $bin was not built" >&2; exit 1; }

mkdir -p "$work/corpus" "$work/seeds" "$work/artifacts"
cargo run -q --locked -p goelf --example fuzz-seeds -- "$work/seeds"
if ((fixtures)); then
  # One of each kind: an old and a new table, stripped and not, PIE, arm64, cgo.
  for spec in "1.15 exe-sw amd64" "1.21 exe amd64" "1.19 pie-strip amd64" "1.21 pie-strip arm64" "1.19 cgo-strip amd64"; do
    read -r ver variant arch <<<"$spec"
    f=$(bash "$root/scripts/fixture.sh" "$ver" "$variant" tlsfixture "$arch")
    cp "$f" "$work/seeds/fixture-$ver-$variant-$arch"
  done
fi

limits=(-timeout="$FUZZ_TIMEOUT" -rss_limit_mb="$FUZZ_RSS_MB" -malloc_limit_mb="$FUZZ_MALLOC_MB")
budget=()
[[ -n $runs ]] && budget+=(-runs="$runs")
[[ -n $secs ]] && budget+=(-max_total_time="$secs")
echo "fuzz.sh: $bin ${budget[*]} ${limits[*]} RLIMIT_AS=${FUZZ_AS_MB} MiB" >&2
exec prlimit --as=$((FUZZ_AS_MB << 20)) -- "$bin" "${limits[@]}" "${budget[@]}" -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$@" "$work/corpus" "$work/seeds"
