#!/usr/bin/env bash
# Redis snapshot benchmark: gsdr's backup of a Redis node (RDB over the
# replication protocol → zstd → age → local folder) against the shell
# pipeline `redis-cli --rdb - | zstd -3 -T0 | age -r KEY > file`, on the same
# server and data set, in the same run (each twice, best time kept).
# Data: SIZE bytes (default 1 GiB) of realistic JSON lines, 8 lines per key.
# Prints both times and throughputs (MiB/s of RDB), gsdr's peak RSS, and ends
# with peak_rss_mib=N and ratio=X.XX (gsdr throughput ÷ shell throughput; target ≥ 1.0).
# Usage: scripts/bench-redis.sh [SIZE_BYTES]
# Env: RDBCOMPRESSION=yes|no (redis `rdbcompression`, default yes),
#      DISKLESS=yes|no (`repl-diskless-sync`, default yes as in Redis 7),
#      TLS=yes (both sides over TLS with client certificates; needs openssl).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
SIZE="${1:-1073741824}"
for p in redis-server redis-cli zstd age bc /usr/bin/time; do
  command -v "$p" >/dev/null || { echo "missing $p: run scripts/install-deps.sh" >&2; exit 2; }
done
cargo build --release --quiet --bin gsdr --example gen_jsonl
GSDR="$PWD/target/release/gsdr"
GEN="$PWD/target/release/examples/gen_jsonl"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gsdr-bench-redis.XXXXXX")"
PID=""
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
LISTEN=(--port "$PORT")
RCLI=(redis-cli -p "$PORT")
TLS_TOML=""
if [ "${TLS:-no}" = yes ]; then
  command -v openssl >/dev/null || { echo "missing openssl" >&2; exit 2; }
  C="$WORK/certs"; mkdir -p "$C"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$C/ca.key" -out "$C/ca.crt" -days 2 -subj /CN=bench-ca 2>/dev/null
  for n in server client; do
    openssl req -newkey rsa:2048 -nodes -keyout "$C/$n.key" -out "$C/$n.csr" -subj "/CN=$n" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost' > "$C/ext"
    openssl x509 -req -in "$C/$n.csr" -CA "$C/ca.crt" -CAkey "$C/ca.key" -CAcreateserial -out "$C/$n.crt" -days 2 -extfile "$C/ext" 2>/dev/null
  done
  LISTEN=(--port 0 --tls-port "$PORT" --tls-cert-file "$C/server.crt" --tls-key-file "$C/server.key" --tls-ca-cert-file "$C/ca.crt")
  RCLI=(redis-cli -p "$PORT" --tls --cacert "$C/ca.crt" --cert "$C/client.crt" --key "$C/client.key")
  TLS_TOML="tls = true
tls_ca_file = \"$C/ca.crt\"
tls_cert_file = \"$C/client.crt\"
tls_key_file = \"$C/client.key\""
fi
redis-server "${LISTEN[@]}" --bind 127.0.0.1 --dir "$WORK" --save "" --appendonly no \
  --repl-diskless-sync "${DISKLESS:-yes}" --repl-diskless-sync-delay 0 \
  --rdbcompression "${RDBCOMPRESSION:-yes}" --logfile "$WORK/redis.log" &
PID=$!
for _ in $(seq 100); do "${RCLI[@]}" ping >/dev/null 2>&1 && break; sleep 0.1; done

echo "loading $(numfmt --to=iec "$SIZE") of JSON lines into redis on port $PORT..."
"$GEN" "$SIZE" | LC_ALL=C mawk -v ORS= '
  { v = v $0 "\n"; if (++n == 8) { k = "r:" NR; printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v; v = ""; n = 0 } }
  END { if (n) { k = "r:" NR; printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v } }' \
  | "${RCLI[@]}" --pipe >/dev/null
KEYS=$("${RCLI[@]}" dbsize)
USED=$("${RCLI[@]}" info memory | awk -F: '/^used_memory:/{print $2}' | tr -d '\r')
echo "keys: $KEYS, used_memory: $(numfmt --to=iec "$USED"), $(nproc) cores"

"$GSDR" keygen -o "$WORK/id.txt" > "$WORK/recipient"
R=$(cat "$WORK/recipient")
cat > "$WORK/policy.toml" <<TOML
name = "bench"
[encryption]
recipients = ["$R"]
identity_file = "$WORK/id.txt"
[targets.local]
kind = "fs"
path = "$WORK/store"
[sources.cache]
kind = "redis"
[sources.cache.redis]
addr = "127.0.0.1:$PORT"
$TLS_TOML
TOML

now() { date +%s.%N; }
best_shell=999999; best_gsdr=999999
for round in 1 2; do
  t0=$(now); "${RCLI[@]}" --rdb - 2>/dev/null | zstd -3 -T0 -q -c | age -r "$R" > "$WORK/shell.zst.age"; t1=$(now)
  s=$(echo "$t1 - $t0" | bc -l); best_shell=$(echo "if ($s < $best_shell) $s else $best_shell" | bc -l)
  rm -rf "$WORK/store"
  t0=$(now); /usr/bin/time -v "$GSDR" --policy "$WORK/policy.toml" -q backup --source cache > /dev/null 2> "$WORK/time.txt"; t1=$(now)
  g=$(echo "$t1 - $t0" | bc -l); best_gsdr=$(echo "if ($g < $best_gsdr) $g else $best_gsdr" | bc -l)
done
rss=$(grep 'Maximum resident' "$WORK/time.txt" | awk '{print int($6/1024)}')
manifest=$(find "$WORK/store" -name manifest.json)
RDB=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["raw_bytes"])' "$manifest")
stored=$(find "$WORK/store" -name data.zst.age -printf '%s')
shell_stored=$(stat -c %s "$WORK/shell.zst.age")
mibps() { echo "scale=1; $RDB / 1048576 / $1" | bc -l; }
echo "rdb: $(numfmt --to=iec "$RDB") (rdbcompression ${RDBCOMPRESSION:-yes}, diskless ${DISKLESS:-yes}, tls ${TLS:-no})"
printf 'shell  redis-cli --rdb - | zstd -3 -T0 | age : %6.2fs  %7s MiB/s  stored %s\n' "$best_shell" "$(mibps "$best_shell")" "$(numfmt --to=iec "$shell_stored")"
printf 'gsdr   backup --source cache (folder)      : %6.2fs  %7s MiB/s  stored %s  peak RSS %s MiB\n' "$best_gsdr" "$(mibps "$best_gsdr")" "$(numfmt --to=iec "$stored")" "$rss"

# Round trip: the restored dump.rdb is byte-identical to what gsdr read, and
# loads: deep-checked by comparing the restored file's SHA-256 with the manifest.
"$GSDR" --policy "$WORK/policy.toml" -q restore --source cache --to-file "$WORK/restored.rdb" >/dev/null
want=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["raw_sha256"])' "$manifest")
got=$(sha256sum "$WORK/restored.rdb" | cut -d' ' -f1)
[ "$want" = "$got" ] && echo "restore: dump.rdb SHA-256 matches the manifest" || { echo "restore: SHA-256 MISMATCH"; exit 1; }
printf "%s header, redis-check-rdb: " "$(head -c 9 "$WORK/restored.rdb")"
if command -v redis-check-rdb >/dev/null; then redis-check-rdb "$WORK/restored.rdb" | grep -E "RDB looks OK|CRC|ERR" | tail -1; fi
echo "peak_rss_mib=$rss"
echo "ratio=$(echo "scale=2; $best_shell / $best_gsdr" | bc -l | sed 's/^\./0./')"
