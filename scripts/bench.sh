#!/usr/bin/env bash
# Benchmarks nvecd with nvecd-bench: builds release, starts a server per scale
# (fresh data each time) with its snapshot dir in a temp dir, runs every
# workload, and compares DUMP SAVE / LOAD throughput with `dd conv=fsync` in
# the same directory.
#
# Usage: scripts/bench.sh [scale ...]        (default: small large)
#   scales: tiny small large
#   BENCH_ARGS="--connections 8 --queries 5000"  extra nvecd-bench options
#   BENCH_OUT=dir   where the JSON summaries are kept (default target/bench)
#   BENCH_TMP=dir   parent of the temp dir (default $TMPDIR or /tmp); put it on
#                   the disk you want snapshots measured on
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
SCALES=("$@")
[ ${#SCALES[@]} -eq 0 ] && SCALES=(small large)
OUT_DIR=${BENCH_OUT:-$ROOT/target/bench}
read -r -a EXTRA <<<"${BENCH_ARGS:-}"

TMP=$(mktemp -d "${BENCH_TMP:-${TMPDIR:-/tmp}}/nvecd-bench.XXXXXX")
SERVER_PID=""

stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=""
}
cleanup() {
    stop_server
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== machine =="
echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "host:    $(uname -srm)"
echo "nproc:   $(nproc)"
echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "memory:  $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "rustc:   $(rustc --version)"
echo "tmp dir: $TMP ($(df -hT "$TMP" | awk 'NR==2 {print $2 " on " $1}'))"
echo

echo "== build =="
cargo build --release --bins
echo

mkdir -p "$OUT_DIR"
STATUS=0
for SCALE in "${SCALES[@]}"; do
    echo "==================== scale: $SCALE ===================="
    DIR="$TMP/$SCALE"
    mkdir -p "$DIR"
    cat >"$DIR/nvecd.yaml" <<YAML
api:
  tcp:
    bind: "127.0.0.1"
    port: 0
events:
  decay_interval_sec: 0
snapshot:
  dir: "$DIR/snapshots"
  interval_sec: 0
logging:
  level: "info"
YAML
    LOG="$DIR/server.log"
    RUST_LOG=info "$ROOT/target/release/nvecd" -c "$DIR/nvecd.yaml" >"$DIR/server.out" 2>"$LOG" &
    SERVER_PID=$!
    ADDR=""
    for _ in $(seq 1 300); do
        ADDR=$(sed 's/\x1b\[[0-9;]*m//g' "$LOG" | grep -o 'listening on [0-9.]*:[0-9]*' | head -1 | awk '{print $3}' || true)
        [ -n "$ADDR" ] && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$ADDR" ]; then
        echo "server did not start; its log:" >&2
        cat "$LOG" >&2
        exit 1
    fi
    echo "server pid $SERVER_PID on $ADDR"
    echo

    JSON="$DIR/result.json"
    RC=0
    "$ROOT/target/release/nvecd-bench" --addr "$ADDR" --scale "$SCALE" --json "$JSON" "${EXTRA[@]}" || RC=$?
    if [ "$RC" -ne 0 ]; then
        echo "nvecd-bench exited with status $RC" >&2
        STATUS=1
    fi
    RSS=$(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' "/proc/$SERVER_PID/status" 2>/dev/null || echo "?")
    echo "server peak RSS: $RSS"
    if grep -Eq 'ERROR|WARN|panicked' "$LOG"; then
        echo "server log warnings/errors (first 10):"
        sed 's/\x1b\[[0-9;]*m//g' "$LOG" | grep -E 'ERROR|WARN|panicked' | head -10 | cut -c1-240 | sed 's/^/  /'
    fi
    stop_server

    # SAVE / LOAD against dd with fsync, same directory, same amount of data.
    if [ -f "$JSON" ]; then
        cp "$JSON" "$OUT_DIR/$SCALE-$(date -u +%Y%m%dT%H%M%SZ).json"
        read -r SIZE SAVE_S LOAD_S VERIFY_S LOAD2_S VERIFY2_S < <(python3 - "$JSON" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
snap = d.get("results", {}).get("snapshot", {})
steps = {}
for s in snap.get("steps", []):
    if s.get("ok"):
        name = s["command"].split()[1]  # SAVE, VERIFY, LOAD
        if "(again)" in s.get("label", ""):
            name += " again"
        steps[name] = s
def sec(k):
    return steps[k]["seconds"] if k in steps else "-"
print(snap.get("size_bytes") or 0, sec("SAVE"), sec("LOAD"), sec("VERIFY"), sec("LOAD again"), sec("VERIFY again"))
PY
)
        if [ "${SIZE:-0}" -gt 0 ]; then
            MB=$(( (SIZE + 1048575) / 1048576 ))
            T0=$(date +%s.%N)
            dd if=/dev/zero of="$DIR/dd.bin" bs=1M count="$MB" conv=fsync status=none
            T1=$(date +%s.%N)
            rm -f "$DIR/dd.bin"
            # The same write around the page cache, for reference (not the target's ratio).
            dd if=/dev/zero of="$DIR/dd.bin" bs=4M count="$(( (MB + 3) / 4 ))" oflag=direct conv=fsync status=none
            T2=$(date +%s.%N)
            rm -f "$DIR/dd.bin"
            python3 - "$SIZE" "$MB" "$T0" "$T1" "$SAVE_S" "$LOAD_S" "$VERIFY_S" "$LOAD2_S" "$VERIFY2_S" "$T2" <<'PY'
import sys
size, mb, t0, t1 = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
dd_s = t1 - t0
dd_rate = mb * 1048576 / dd_s / 1e6
direct_s = float(sys.argv[10]) - t1
direct_mb = (mb + 3) // 4 * 4
print(f"== snapshot vs dd (MB = 10^6 bytes) ==")
print(f"dd bs=1M count={mb} conv=fsync: {dd_s:.3f} s, {dd_rate:.1f} MB/s")
print(f"dd bs=4M count={direct_mb // 4} oflag=direct conv=fsync: {direct_s:.3f} s, {direct_mb * 1048576 / direct_s / 1e6:.1f} MB/s")
for name, s in (("SAVE", sys.argv[5]), ("LOAD", sys.argv[6]), ("LOAD again", sys.argv[8]), ("VERIFY", sys.argv[7]), ("VERIFY again", sys.argv[9])):
    if s == "-":
        print(f"{name:<12}: failed")
        continue
    s = float(s)
    rate = size / s / 1e6 if s > 0 else float("inf")
    print(f"{name:<12}: {s:.3f} s, {rate:.1f} MB/s = {rate / dd_rate:.2f} x dd")
PY
        else
            echo "(no snapshot size: DUMP SAVE failed or was not run; dd comparison skipped)"
        fi
    fi
    echo
done
exit $STATUS
