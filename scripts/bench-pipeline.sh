#!/usr/bin/env bash
# Pipeline benchmark: gsdr's backup (zstd + age, to a local folder) against
# the shell pipeline `cat FILE | zstd -3 -T0 | age -r KEY > file` on the same 1 GiB of
# JSON-like data, in the same run; then gsdr's peak RSS for 1 GiB and 4 GiB
# inputs, and a restore round trip (SHA-256 compared).
# Then the memory budget: `workers = 0` (one zstd worker per CPU, capped by
# pipeline.memory_budget) through S3 (a throwaway moto_server) with the part
# size doubling every 10 parts instead of 1,000 (GSDR_BENCH_PARTS_PER_TIER),
# so 1 GiB crosses four doublings (5 → 80 MiB parts); its peak RSS is printed.
# Last two lines: peak_rss_mib=N (max over the runs) and ratio=X.XX
# (gsdr throughput ÷ shell pipeline throughput; target ≥ 1.0).
# Usage: scripts/bench-pipeline.sh [SIZE_BYTES]   (default 1 GiB)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >/dev/null
source scripts/env.sh
SIZE="${1:-1073741824}"
cargo build --release --quiet --bin gsdr --example gen_jsonl
GSDR="$PWD/target/release/gsdr"
GEN="$PWD/target/release/examples/gen_jsonl"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gsdr-bench.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
# The input lives in memory when /dev/shm has room, so both sides read it at the same speed.
DATA_DIR="$WORK"; [ -d /dev/shm ] && [ "$(df --output=avail -B1 /dev/shm | tail -1)" -gt $((SIZE * 2)) ] && DATA_DIR="$(mktemp -d /dev/shm/gsdr-bench.XXXXXX)" && trap 'rm -rf "$WORK" "$DATA_DIR"' EXIT
INPUT="$DATA_DIR/input.jsonl"
"$GEN" "$SIZE" > "$INPUT"
RAW_SHA=$(sha256sum "$INPUT" | cut -d' ' -f1)

"$GSDR" keygen -o "$WORK/id.txt" > "$WORK/recipient"
R=$(cat "$WORK/recipient")
policy() { # $1 = name, $2 = argv TOML array
cat > "$WORK/$1.toml" <<TOML
name = "bench"
[encryption]
recipients = ["$R"]
identity_file = "$WORK/id.txt"
[targets.local]
kind = "fs"
path = "$WORK/store-$1"
[sources.data]
kind = "command"
[sources.data.command]
argv = $2
TOML
}
policy one "[\"cat\", \"$INPUT\"]"
policy four "[\"sh\", \"-c\", \"cat '$INPUT' '$INPUT' '$INPUT' '$INPUT'\"]"

now() { date +%s.%N; }
rss_of() { grep 'Maximum resident' "$1" | awk '{print int($6/1024)}'; }

sync
echo "input: $(numfmt --to=iec "$SIZE") of JSON lines, $(nproc) cores"
# Shell pipeline first, then gsdr; each twice, best time kept (warm caches for both).
best_shell=999999; best_gsdr=999999
for round in 1 2; do
  # Both sides read the data from a producer's pipe: gsdr's command source runs
  # `cat FILE`, the shell pipeline gets the same `cat FILE` on its stdin.
  t0=$(now); cat "$INPUT" | zstd -3 -T0 -q -c | age -r "$R" > "$WORK/shell.zst.age"; t1=$(now)
  s=$(echo "$t1 - $t0" | bc -l); best_shell=$(echo "if ($s < $best_shell) $s else $best_shell" | bc -l)
  rm -rf "$WORK/store-one"
  t0=$(now); /usr/bin/time -v "$GSDR" --policy "$WORK/one.toml" -q backup > /dev/null 2> "$WORK/time-one.txt"; t1=$(now)
  g=$(echo "$t1 - $t0" | bc -l); best_gsdr=$(echo "if ($g < $best_gsdr) $g else $best_gsdr" | bc -l)
done
rss1=$(rss_of "$WORK/time-one.txt")
stored=$(find "$WORK/store-one" -name data.zst.age -printf '%s')
shell_stored=$(stat -c %s "$WORK/shell.zst.age")
mibps() { echo "scale=1; $SIZE / 1048576 / $1" | bc -l; }
printf 'shell  cat|zstd -3 -T0|age: %6.2fs  %7s MiB/s  stored %s\n' "$best_shell" "$(mibps "$best_shell")" "$(numfmt --to=iec "$shell_stored")"
printf 'gsdr   backup (folder)  : %6.2fs  %7s MiB/s  stored %s  peak RSS %s MiB\n' "$best_gsdr" "$(mibps "$best_gsdr")" "$(numfmt --to=iec "$stored")" "$rss1"

/usr/bin/time -v "$GSDR" --policy "$WORK/four.toml" -q backup > /dev/null 2> "$WORK/time-four.txt"
rss4=$(rss_of "$WORK/time-four.txt")
echo "gsdr   backup of 4x input : peak RSS $rss4 MiB"
rm -rf "$WORK/store-four"

# Round trip: restore and compare.
/usr/bin/time -v "$GSDR" --policy "$WORK/one.toml" -q restore --source data --to-file "$WORK/restored" 2> "$WORK/time-restore.txt"
back=$(sha256sum "$WORK/restored" | cut -d' ' -f1)
rssr=$(rss_of "$WORK/time-restore.txt")
if [ "$back" = "$RAW_SHA" ]; then echo "restore: SHA-256 identical ($back), peak RSS $rssr MiB"; else echo "restore: SHA-256 MISMATCH"; exit 1; fi

# Memory budget through S3 with growing parts.
VENV="${GSDR_TEST_VENV:-$PWD/.venv}"
PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/python" -m moto.server -H 127.0.0.1 -p "$PORT" > "$WORK/moto.log" 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null; rm -rf "$WORK" "$DATA_DIR"' EXIT
for _ in $(seq 100); do "$VENV/bin/python" -c "import socket; socket.create_connection(('127.0.0.1',$PORT))" 2>/dev/null && break; sleep 0.1; done
"$VENV/bin/python" -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:$PORT/gsdr-budget', method='PUT')).read()"
echo test > "$WORK/s3key"
cat > "$WORK/budget.toml" <<TOML
name = "bench"
[encryption]
recipients = ["$R"]
identity_file = "$WORK/id.txt"
[compression]
workers = 0
[pipeline]
memory_budget = "256MiB"
[targets.s3]
kind = "s3"
endpoint = "http://127.0.0.1:$PORT"
bucket = "gsdr-budget"
access_key_id = { file = "$WORK/s3key" }
secret_access_key = { file = "$WORK/s3key" }
part_size = "5MiB"
upload_concurrency = 8
[sources.data]
kind = "command"
[sources.data.command]
argv = ["cat", "$INPUT"]
TOML
GSDR_BENCH_PARTS_PER_TIER=10 /usr/bin/time -v "$GSDR" --policy "$WORK/budget.toml" -q backup > /dev/null 2> "$WORK/time-budget.txt"
rssb=$(rss_of "$WORK/time-budget.txt")
echo "gsdr   workers=0 to S3, parts 5 -> 80 MiB, upload_concurrency 8, memory_budget 256 MiB: peak RSS $rssb MiB"

peak=$(printf '%s\n' "$rss1" "$rss4" "$rssr" "$rssb" | sort -n | tail -1)
echo "peak_rss_mib=$peak"
echo "ratio=$(echo "scale=2; $best_shell / $best_gsdr" | bc -l | sed 's/^\./0./')"
