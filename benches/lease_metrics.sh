#!/usr/bin/env bash
# `lease_1t` with and without the `metrics` feature, side by side: both bench binaries are
# built first, then run alternately (with, without, with, without, ...) so that both see the
# same phases of a shared machine. Prints each run's medians and the ratio to the floor (the
# floor is measured in the same group, so each ratio is from one run).
#
#   benches/lease_metrics.sh            # 3 rounds
#   ROUNDS=5 benches/lease_metrics.sh
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
with=target/bench-metrics
without=target/bench-no-metrics
CARGO_TARGET_DIR=$with cargo bench --bench poolwarden --no-run
CARGO_TARGET_DIR=$without cargo bench --bench poolwarden --no-default-features \
    --features cli,sim,tsc --no-run

median() { # target dir, function -> nanoseconds
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' \
        "$1/criterion/lease_1t/$2/new/estimates.json"
}

printf '%-6s %-16s %12s %12s %8s\n' round build poolwarden floor ratio
for round in $(seq "$rounds"); do
    for build in with without; do
        if [ "$build" = with ]; then
            dir=$with
            CARGO_TARGET_DIR=$dir cargo bench --bench poolwarden -- 'lease_1t/(poolwarden|floor)$' \
                > "$dir/lease_1t.$round.log" 2>&1
        else
            dir=$without
            CARGO_TARGET_DIR=$dir cargo bench --bench poolwarden --no-default-features \
                --features cli,sim,tsc -- 'lease_1t/(poolwarden|floor)$' > "$dir/lease_1t.$round.log" 2>&1
        fi
        p=$(median "$dir" poolwarden)
        f=$(median "$dir" floor)
        python3 -c 'import sys; r,b,p,f=sys.argv[1:]; print("%-6s %-16s %10.1f ns %10.1f ns %7.2fx" % (r, b+" metrics", float(p), float(f), float(p)/float(f)))' \
            "$round" "$build" "$p" "$f"
    done
done
