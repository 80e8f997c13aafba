#!/bin/bash
# Start-up of the dmio CLI beside `node -e 0`, interleaved, medians of N runs (ms): `dmio
# --version` and a small copy (random:1M to a new file, flushed). Optional BEFORE=path/to/bin
# measures an older checkout's bin in the same loop (docs/cli.md "Start-up" used issue 20's base).
# Usage: bench/startup.sh [N]   (default 21); scratch files go to a temporary directory.
set -euo pipefail
N=${1:-21}
NOW=${NOW:-$(dirname "$0")/../bin/dmio.js}
BEFORE=${BEFORE:-}
SCRATCH=$(mktemp -d)
trap 'rm -rf "$SCRATCH"' EXIT
t() { local s; s=$(date +%s%N); "$@" >/dev/null 2>&1; echo $(( ($(date +%s%N) - s) / 1000000 )); }
for _ in $(seq "$N"); do
  echo "node-e-0 $(t node -e 0)"
  for variant in now before; do
    bin=$NOW; [ "$variant" = before ] && bin=$BEFORE
    [ -n "$bin" ] || continue
    echo "$variant-version $(t "$bin" --version)"
    rm -f "$SCRATCH/copy.img"
    echo "$variant-copy $(t "$bin" copy random:1M,seed=1 "$SCRATCH/copy.img")"
  done
done | sort -k1,1 -k2n | awk '{ v[$1] = v[$1] " " $2; n[$1]++ }
  END { for (k in v) { split(substr(v[k], 2), a, " ");
    print k, "median", a[int((n[k] + 1) / 2)], "min", a[1], "max", a[n[k]] } }' | sort
