#!/usr/bin/env bash
# The cost of Events: `c4m-e2e-bench schedule` with Events recorded and with
# `--no-events`, interleaved (on, off, on, off, ...) so that a change in the
# machine's load falls on both alike, then the median of each and their
# difference.
#
# Usage: scripts/bench-events.sh [RUNS] [-- SCHEDULE FLAGS...]
#   RUNS: runs of each (default 5); flags after `--` go to every run, e.g.
#   `scripts/bench-events.sh 7 -- --nodes 1000 --instances 5000`.
# Needs a release build: cargo build --release --bins
set -euo pipefail
runs=5
if [[ $# -gt 0 && $1 != -- ]]; then runs=$1; shift; fi
[[ ${1:-} == -- ]] && shift
root="$(cd "$(dirname "$0")/.." && pwd)"
bench=${C4M_E2E_BENCH:-$root/target/release/c4m-e2e-bench}
[[ -x $bench ]] || { echo "$bench not found: cargo build --release --bins" >&2; exit 1; }

# The figures of one run: "SECONDS RATE" from its "all bound ... after
# creation" line (created → bound).
figures() {
    sed -n 's/.*all bound \([0-9.]*\) s after creation: \([0-9]*\) instances\/s.*/\1 \2/p'
}

on=() off=()
for ((i = 1; i <= runs; i++)); do
    for mode in on off; do
        flags=("$@")
        [[ $mode == off ]] && flags+=(--no-events)
        out=$("$bench" schedule "${flags[@]}")
        line=$(figures <<<"$out")
        [[ -n $line ]] || { echo "run $i ($mode): no figure in:" >&2; echo "$out" >&2; exit 1; }
        echo "run $i, Events $mode: created → all bound ${line% *} s, ${line#* } instances/s"
        if [[ $mode == on ]]; then on+=("$line"); else off+=("$line"); fi
    done
done

# The median of the first fields (seconds) of the lines on stdin.
median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
median_on=$(printf '%s\n' "${on[@]}" | median)
median_off=$(printf '%s\n' "${off[@]}" | median)
rate_on=$(printf '%s\n' "${on[@]}" | awk '{ print $2 }' | median)
rate_off=$(printf '%s\n' "${off[@]}" | awk '{ print $2 }' | median)
echo "medians of $runs runs each (created → all bound):"
echo "  Events on:  $median_on s, $rate_on instances/s"
echo "  Events off: $median_off s, $rate_off instances/s"
awk -v on="$median_on" -v off="$median_off" 'BEGIN { printf "  Events cost %+.1f%% of the binding time\n", (on - off) / off * 100 }'
