#!/usr/bin/env bash
# Instructions the edge executes per request, counted by valgrind's callgrind: unlike time, the
# count does not move with the machine's speed, so two builds can be compared on a noisy VM.
#
# Usage: bench/callgrind.sh SCENARIO ROUTE [EDGE_BINARY]
#   SCENARIO  an aero-bench scenario: lookup, writes or sales
#   ROUTE     the route whose requests are counted, as the edge's metrics name it:
#             "GET /v1/customers", "POST /v1/customers", "POST /v1/orders" or "POST /v1/checkins"
#   EDGE_BINARY  defaults to target/release/aero-edge
#   KEEP=DIR     keeps callgrind's files (one per thread) in DIR, for callgrind_annotate
#   LOAD_SECONDS=N  each timed load of the scenario (default 3600): the sales scenario's
#                check-ins follow its orders, so count them with LOAD_SECONDS=90 SKIP=300
#
# aero-bench runs the scenario with its edge under callgrind (about 50 times slower, so a
# handful of requests a second). Once SKIP requests of ROUTE were answered (default 3000:
# the sales scenario's untimed setup and the warm-up), the counters are zeroed, SECONDS
# (default 30) later they are written out, and the instructions of every edge thread are
# divided by the requests answered in between. Kernel time (system calls, TCP) is not counted.
set -euo pipefail

scenario=${1:?scenario}
route=${2:?route, e.g. "POST /v1/orders"}
repo=$(cd "$(dirname "$0")/.." && pwd)
edge=$(realpath "${3:-$repo/target/release/aero-edge}")
skip=${SKIP:-3000}
seconds=${SECONDS_COUNTED:-30}
bench=$repo/target/release/aero-bench
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
[ -x "$bench" ] || { echo "build it first: cargo build --release -p aero-bench" >&2; exit 1; }

work=$(mktemp -d)
pid=
trap 'kill $pid "$bench_pid" 2>/dev/null || true; wait "$bench_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cat >"$work/aero-edge" <<EOF
#!/usr/bin/env bash
if [ "\$1" = serve ]; then
  exec valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file=$work/callgrind.out \
    --log-file=$work/valgrind.log "$edge" "\$@"
fi
exec "$edge" "\$@"
EOF
chmod +x "$work/aero-edge"

"$bench" "$scenario" --seconds "${LOAD_SECONDS:-3600}" --warmup 1 --customers 20000 --edge "$work/aero-edge" \
  >"$work/bench.txt" 2>&1 &
bench_pid=$!

method=${route%% *}
path=${route#* }
answered() {
  curl -s "http://$addr/metrics" |
    awk -v m="method=\"$method\"" -v r="route=\"$path\"" \
      'index($0, m) && index($0, r) && /status="20[01]"/ { n += $2 } END { print n + 0 }'
}
addr=
until [ -n "$addr" ]; do
  kill -0 "$bench_pid" 2>/dev/null || { cat "$work/bench.txt" >&2; exit 1; }
  sleep 1
  line=$(grep -m1 'aero-bench: edge pid' "$work/bench.txt" || true)
  pid=$(sed -n 's/.*edge pid \([0-9]*\) on.*/\1/p' <<<"$line")
  addr=$(sed -n 's/.* on \([0-9.:]*\).*/\1/p' <<<"$line")
done
until [ "$(answered)" -ge "$skip" ]; do
  kill -0 "$bench_pid" 2>/dev/null || { cat "$work/bench.txt" >&2; exit 1; }
  sleep 2
done
callgrind_control -z "$pid" >/dev/null 2>&1
before=$(answered)
sleep "$seconds"
after=$(answered)
callgrind_control -d "$pid" >/dev/null 2>&1
requests=$((after - before))
if [ -n "${KEEP:-}" ]; then
  mkdir -p "$KEEP" && cp "$work"/callgrind.out.*-* "$KEEP"/
fi
[ "$requests" -gt 0 ] || { echo "no $route answered while counting" >&2; exit 1; }

declare -A by_role=()
total=0
for dump in "$work"/callgrind.out.*-*; do
  count=$(sed -n 's/^summary: //p' "$dump")
  total=$((total + count))
  # The writer thread runs the group commits; tokio's workers poll the connections.
  if grep -q 'aero_edge::outbox::Job>::run' "$dump"; then
    role="writer thread"
  elif grep -q 'hyper::proto::h1::dispatch' "$dump"; then
    role="runtime workers"
  else
    role="other threads (readers, checkpoints, the fsync)"
  fi
  by_role[$role]=$((${by_role[$role]:-0} + count))
done
echo "| edge threads | instructions per request |"
echo "|---|---|"
for role in "runtime workers" "writer thread" "other threads (readers, checkpoints, the fsync)"; do
  echo "| $role | $((${by_role[$role]:-0} / requests)) |"
done
echo "| all | **$((total / requests))** |"
echo
echo "$requests × $route counted over ${seconds} s; $(basename "$edge") $(sha256sum "$edge" | cut -c1-12)"
