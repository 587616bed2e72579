#!/usr/bin/env bash
# CI step: runs every fuzz target briefly (about 30 s each) with a fixed
# seed and a fixed number of runs, starting from the seeds only (fuzz/seed.sh
# into fuzz/target/ci-corpus/, made afresh each time).
#
# Exit status:
#   0  all targets ran without a crash, OR the fuzz part was skipped because
#      something in the environment is missing or broken (no nightly
#      toolchain, cargo-fuzz would not install, dependencies unavailable, a
#      nightly/sanitizer build problem while the code itself checks fine);
#      the reason is printed as "fuzz: skipped: <reason>".
#   1  a target crashed (a panic, a failed assertion, a sanitizer report, an
#      out-of-memory or leak report): a real bug. The input is kept in
#      fuzz/artifacts/<target>/ and printed in hex; see fuzz/README.md to
#      reproduce it. Also 1 when the fuzz crate no longer compiles on stable
#      with --cfg fuzzing (the targets are out of date with the code).
#
# Knobs (environment): FUZZ_CI_SECONDS caps each run (default 45; the run
# counts below take about 30 s on the 2-CPU machine of RELIABILITY.md),
# FUZZ_CI_INSTALL_TIMEOUT for `cargo install cargo-fuzz` (default 600).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
cap="${FUZZ_CI_SECONDS:-45}"
install_timeout="${FUZZ_CI_INSTALL_TIMEOUT:-600}"
logs="$here/target/ci-logs"
start=$(date +%s)

skip() {
    echo "fuzz: skipped: $*"
    exit 0
}
elapsed() { echo $(($(date +%s) - start)); }

command -v cargo > /dev/null 2>&1 || skip "cargo not found"
command -v timeout > /dev/null 2>&1 || skip "coreutils timeout not found"
cargo +nightly --version > /dev/null 2>&1 ||
    skip "no nightly toolchain (cargo-fuzz needs one: rustup toolchain install nightly)"
mkdir -p "$logs" || skip "cannot create $logs"

if ! cargo +nightly fuzz --version > /dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (timeout ${install_timeout}s)"
    if ! timeout "$install_timeout" nice -n 19 cargo install cargo-fuzz --locked \
        > "$logs/install.log" 2>&1; then
        tail -n 20 "$logs/install.log"
        skip "cargo install cargo-fuzz --locked failed or timed out (log above)"
    fi
    cargo +nightly fuzz --version > /dev/null 2>&1 || skip "cargo-fuzz installed but not runnable"
fi
echo "fuzz: $(cargo +nightly fuzz --version), $(rustc +nightly --version) [$(elapsed)s]"

# Dependencies: a network or registry failure is environmental.
if ! timeout 600 cargo fetch --locked > "$logs/fetch.log" 2>&1; then
    tail -n 20 "$logs/fetch.log"
    skip "cargo fetch for the fuzz crate failed (log above)"
fi

if ! nice -n 19 cargo +nightly fuzz build > "$logs/build.log" 2>&1; then
    tail -n 40 "$logs/build.log"
    # Broken code or a broken nightly? Check the targets on the stable
    # toolchain with the same cfg: deterministic, and offline after the fetch.
    echo "fuzz: the nightly fuzz build failed; checking the targets on stable"
    if RUSTFLAGS="--cfg fuzzing" CARGO_TARGET_DIR="$here/target/ci-check" \
        nice -n 19 cargo +stable check --offline --locked --bins > "$logs/check.log" 2>&1; then
        skip "cargo +nightly fuzz build failed but the code checks on stable (toolchain problem; log above)"
    fi
    tail -n 40 "$logs/check.log"
    echo "fuzz: FAILED: the fuzz targets do not compile (log above)"
    exit 1
fi
echo "fuzz: built [$(elapsed)s]"

# A fresh corpus of the seeds only, wherever this runs, so a run is the same
# on every machine (a local fuzz/corpus/ is left alone).
corpus="$here/target/ci-corpus"
rm -rf "$corpus"
./seed.sh "$corpus" || skip "seed.sh failed"

# target:runs (about 30 s each here, in one run at a time)
targets=(
    snapshot_reader_nocrc:220000
    snapshot_reader:90000
    snapshot_roundtrip:40000
    parse_line:360000
)
status=0
for entry in "${targets[@]}"; do
    t="${entry%%:*}"
    runs="${entry##*:}"
    case "$t" in
        snapshot_reader | snapshot_reader_nocrc) dict=(-dict=dict/snapshot.dict) ;;
        parse_line) dict=(-dict=dict/protocol.dict) ;;
        *) dict=() ;;
    esac
    # only inputs written by this run count (older local artifacts are kept)
    mkdir -p "artifacts/$t"
    touch "$logs/$t.start"
    sleep 1
    nice -n 19 cargo +nightly fuzz run "$t" "$corpus/$t" -- \
        -seed=1 -runs="$runs" -max_total_time="$cap" -timeout=30 -print_final_stats=1 \
        "${dict[@]}" > "$logs/$t.log" 2>&1
    rc=$?
    found=$(find "artifacts/$t" -type f -newer "$logs/$t.start" \( -name 'crash-*' -o -name 'oom-*' -o -name 'leak-*' -o -name 'timeout-*' \) | head -n 1)
    summary=$(grep -E '^(Done|stat::number_of_executed_units|stat::average_exec_per_sec)' "$logs/$t.log" | tr '\n' ' ')
    if [ -n "$found" ]; then
        grep -m 1 -B 2 -A 30 -E 'panicked|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)' "$logs/$t.log"
        echo "fuzz: FAILED: $t: $found"
        od -A x -t x1z -v "$found" | head -n 64
        echo "fuzz: reproduce with: cd fuzz && cargo +nightly fuzz run $t $found"
        status=1
    elif [ "$rc" -ne 0 ]; then
        tail -n 20 "$logs/$t.log"
        echo "fuzz: $t: cargo fuzz exited $rc without a crash input; not counted as a failure"
    else
        echo "fuzz: $t ok: $summary[$(elapsed)s]"
    fi
done
echo "fuzz: done in $(elapsed)s"
exit "$status"
