#!/usr/bin/env bash
# Dump throughput of gsdr ÷ a bare driver loop reading the same collections and
# discarding them (examples/mongo_read_all.rs), same server, same run.
#
#   scripts/bench-mongo.sh                 # nx-27017 from $GSDR_TEST_VENV (or .venv)
#   BENCH_MONGO_URI=mongodb://... scripts/bench-mongo.sh   # an existing server,
#                                          # already holding data (no fill)
# Knobs: BENCH_MONGO_DOCS (default 200000), BENCH_MONGO_PAD (bytes, default 400),
#        BENCH_MONGO_CONCURRENCY (default 4), BENCH_ROUNDS (default 2; best of each).
# Prints per-run figures, gsdr's peak RSS (/usr/bin/time -v), and last `ratio=X.XX`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

DOCS=${BENCH_MONGO_DOCS:-200000}
PAD=${BENCH_MONGO_PAD:-400}
CONC=${BENCH_MONGO_CONCURRENCY:-4}
ROUNDS=${BENCH_ROUNDS:-2}
VENV=${GSDR_TEST_VENV:-.venv}

cargo build --release -q --bin gsdr --example mongo_read_all
GSDR=target/release/gsdr
READ=target/release/examples/mongo_read_all

work=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${BENCH_MONGO_URI:-}" ]; then
  URI=$BENCH_MONGO_URI
else
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$VENV/bin/nx-27017" --db memory --host 127.0.0.1 -p "$port" \
    --log-file "$work/nx.log" --pid-file "$work/nx.pid" >/dev/null 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  URI="mongodb://127.0.0.1:$port/?directConnection=true"
  echo "filling nx-27017 with $DOCS documents (pad $PAD bytes)..."
  "$READ" fill "$URI" "$DOCS" "$PAD"
fi

printf '%s' "$URI" >"$work/uri"
"$GSDR" keygen --output "$work/id.txt" >"$work/recipient"
recipient=$(grep -o 'age1[0-9a-z]*' "$work/recipient" | head -1)
cat >"$work/policy.toml" <<TOML
name = "bench"
[encryption]
recipients = ["$recipient"]
identity_file = "$work/id.txt"
[targets.local]
kind = "fs"
path = "$work/store"
[sources.m]
kind = "mongo"
[sources.m.mongo]
uri = { file = "$work/uri" }
read_preference = "primary"
concurrency = $CONC
TOML

now() { date +%s.%N; }
best_bare=""; best_gsdr=""; rss=0
for r in $(seq "$ROUNDS"); do
  t0=$(now); out=$("$READ" read "$URI" "$CONC"); t1=$(now)
  bare=$(echo "$t1 - $t0" | bc -l)
  echo "round $r bare driver: $out wall=$(printf %.3f "$bare")s"
  t0=$(now)
  /usr/bin/time -v -o "$work/time.txt" "$GSDR" --policy "$work/policy.toml" --quiet backup --source m >/dev/null
  t1=$(now)
  g=$(echo "$t1 - $t0" | bc -l)
  kb=$(awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$work/time.txt")
  echo "round $r gsdr backup: wall=$(printf %.3f "$g")s peak_rss=$((kb / 1024))MiB"
  [ "$kb" -gt "$rss" ] && rss=$kb
  if [ -z "$best_bare" ] || [ "$(echo "$bare < $best_bare" | bc -l)" = 1 ]; then best_bare=$bare; fi
  if [ -z "$best_gsdr" ] || [ "$(echo "$g < $best_gsdr" | bc -l)" = 1 ]; then best_gsdr=$g; fi
done
raw=$(du -sb "$work/store" | cut -f1)
echo "stored_bytes_all_rounds=$raw peak_rss_mib=$((rss / 1024))"
echo "best bare=$(printf %.3f "$best_bare")s best gsdr=$(printf %.3f "$best_gsdr")s"
printf 'ratio=%.2f\n' "$(echo "$best_bare / $best_gsdr" | bc -l)"
