#!/usr/bin/env bash
# Fills the (git-ignored) working corpora fuzz/corpus/<target>/ (or
# <dir>/<target>/ with `seed.sh <dir>`) with the seeds:
# the golden snapshot files of snapshots-testdata/ for the reader targets, the
# committed request lines of fuzz/seeds/parse_line/ for parse_line. The round
# trip target starts from an empty corpus (its input is structured).
# Existing corpus entries are kept; seeds are copied under a `seed_` name.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
out="${1:-$here/corpus}"
for t in snapshot_reader snapshot_reader_nocrc; do
    mkdir -p "$out/$t"
    for f in "$root"/snapshots-testdata/*.nvec; do
        cp "$f" "$out/$t/seed_$(basename "$f")"
    done
done
mkdir -p "$out/parse_line" "$out/snapshot_roundtrip"
for f in "$here"/seeds/parse_line/*; do
    cp "$f" "$out/parse_line/seed_$(basename "$f")"
done
