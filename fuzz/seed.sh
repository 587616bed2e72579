#!/usr/bin/env bash
# Fills the (git-ignored) working corpora fuzz/corpus/<target>/ with the seeds:
# the golden snapshot files of snapshots-testdata/ for the reader targets, the
# committed request lines of fuzz/seeds/parse_line/ for parse_line. The round
# trip target starts from an empty corpus (its input is structured).
# Existing corpus entries are kept; seeds are copied under a `seed_` name.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
for t in snapshot_reader snapshot_reader_nocrc; do
    mkdir -p "$here/corpus/$t"
    for f in "$root"/snapshots-testdata/*.nvec; do
        cp "$f" "$here/corpus/$t/seed_$(basename "$f")"
    done
done
mkdir -p "$here/corpus/parse_line" "$here/corpus/snapshot_roundtrip"
for f in "$here"/seeds/parse_line/*; do
    cp "$f" "$here/corpus/parse_line/seed_$(basename "$f")"
done
