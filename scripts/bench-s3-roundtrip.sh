#!/usr/bin/env bash
# Round trip through S3: 1 GiB of generated JSON lines through `gsdr backup`
# (command source) → S3 (a throwaway moto_server) → `gsdr verify` →
# `gsdr restore --to-file`, SHA-256 compared; peak RSS of each step.
# moto keeps objects in memory: this is a correctness and memory run, not a
# throughput comparison (scripts/bench-pipeline.sh measures throughput).
# Usage: scripts/bench-s3-roundtrip.sh [SIZE_BYTES]   (default 1 GiB)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh >/dev/null
source scripts/env.sh
SIZE="${1:-1073741824}"
cargo build --release --quiet --bin gsdr --example gen_jsonl
GSDR="$PWD/target/release/gsdr"
VENV="${GSDR_TEST_VENV:-$PWD/.venv}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/gsdr-s3rt.XXXXXX")"
PORT=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VENV/bin/python" -m moto.server -H 127.0.0.1 -p "$PORT" > "$WORK/moto.log" 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
"$VENV/bin/python" -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:$PORT/gsdr-rt', method='PUT')).read()"
echo "dummy-key" > "$WORK/ak"; echo "dummy-secret" > "$WORK/sk"
"$GSDR" keygen -o "$WORK/id.txt" > "$WORK/r"
cat > "$WORK/p.toml" <<TOML
name = "s3-roundtrip"
[encryption]
recipients = ["$(cat "$WORK/r")"]
identity_file = "$WORK/id.txt"
[targets.s3]
kind = "s3"
endpoint = "http://127.0.0.1:$PORT"
bucket = "gsdr-rt"
prefix = "gsdr"
access_key_id = { file = "$WORK/ak" }
secret_access_key = { file = "$WORK/sk" }
part_size = "5MiB"
upload_concurrency = 2
[sources.data]
kind = "command"
[sources.data.command]
argv = ["$PWD/target/release/examples/gen_jsonl", "$SIZE"]
TOML
WANT=$("$PWD/target/release/examples/gen_jsonl" "$SIZE" | sha256sum | cut -d' ' -f1)
rss() { grep 'Maximum resident' "$1" | awk '{print int($6/1024)}'; }
t0=$(date +%s.%N)
/usr/bin/time -v "$GSDR" --policy "$WORK/p.toml" -q backup 2> "$WORK/t1" >/dev/null
t1=$(date +%s.%N)
/usr/bin/time -v "$GSDR" --policy "$WORK/p.toml" -q verify 2> "$WORK/t2" >/dev/null
/usr/bin/time -v "$GSDR" --policy "$WORK/p.toml" -q restore --source data --to-file "$WORK/out" 2> "$WORK/t3" >/dev/null
GOT=$(sha256sum "$WORK/out" | cut -d' ' -f1)
echo "backup to S3: $(echo "$t1 - $t0" | bc -l | cut -c1-5)s, peak RSS $(rss "$WORK/t1") MiB"
echo "verify:       peak RSS $(rss "$WORK/t2") MiB"
echo "restore:      peak RSS $(rss "$WORK/t3") MiB"
"$GSDR" --policy "$WORK/p.toml" list
if [ "$GOT" = "$WANT" ]; then echo "sha256 identical: $GOT"; else echo "SHA-256 MISMATCH: $GOT != $WANT"; exit 1; fi
