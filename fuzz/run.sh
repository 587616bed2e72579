#!/usr/bin/env bash
# Runs one fuzz target: fills its corpus from the seeds (seed.sh), then
# `cargo +nightly fuzz run` under `nice -n 19` with the target's dictionary.
#
#   fuzz/run.sh <target> [seconds=600] [extra libFuzzer flags...]
#
# Targets: snapshot_reader_nocrc snapshot_reader snapshot_roundtrip parse_line.
# A crash is written to fuzz/artifacts/<target>/ and makes this exit non-zero.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
target="${1:?usage: fuzz/run.sh <target> [seconds] [libFuzzer flags...]}"
secs="${2:-600}"
shift $(( $# >= 2 ? 2 : 1 ))
case "$target" in
    snapshot_reader|snapshot_reader_nocrc) dict=(-dict=dict/snapshot.dict) ;;
    parse_line) dict=(-dict=dict/protocol.dict) ;;
    snapshot_roundtrip) dict=() ;;
    *) echo "unknown target: $target" >&2; exit 2 ;;
esac
cd "$here"
./seed.sh
exec nice -n 19 cargo +nightly fuzz run "$target" "corpus/$target" -- \
    -max_total_time="$secs" -print_final_stats=1 "${dict[@]}" "$@"
