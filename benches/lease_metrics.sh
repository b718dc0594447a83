#!/usr/bin/env bash
# `lease_1t` with and without the `metrics` feature, side by side: both bench binaries are
# built first, then run alternately (with, without, with, without, ...) so that both see the
# same phases of a shared machine. Prints each run's medians and the ratio to the floor (the
# floor is measured in the same group, so each ratio is from one run).
#
#   benches/lease_metrics.sh                    # lease_1t, 3 rounds
#   ROUNDS=5 benches/lease_metrics.sh
#   GROUP=tick_40k benches/lease_metrics.sh     # the same for the tick (its gauges)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
group=${GROUP:-lease_1t}
# One target dir: the two builds share every dependency; only poolwarden and the bench differ.
dir=${CARGO_TARGET_DIR:-target/bench-lease}
export CARGO_TARGET_DIR=$dir
without=(--no-default-features --features cli,sim,tsc)
cargo bench --bench poolwarden --no-run
cargo bench --bench poolwarden "${without[@]}" --no-run

median() { # target dir, function -> nanoseconds
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' \
        "$1/criterion/$group/$2/new/estimates.json"
}

printf '%-6s %-16s %12s %12s %8s\n' round build poolwarden floor ratio
for round in $(seq "$rounds"); do
    for build in with without; do
        if [ "$build" = with ]; then
            features=()
        else
            features=("${without[@]}")
        fi
        cargo bench --bench poolwarden "${features[@]}" -- "^$group/(poolwarden|floor)\$" \
            > "$dir/$group.$build.$round.log" 2>&1
        p=$(median "$dir" poolwarden)
        f=$(median "$dir" floor)
        python3 -c 'import sys; r,b,p,f=sys.argv[1:]; print("%-6s %-16s %10.1f ns %10.1f ns %7.2fx" % (r, b+" metrics", float(p), float(f), float(p)/float(f)))' \
            "$round" "$build" "$p" "$f"
    done
done
