#!/usr/bin/env bash
# gsdr vs pgBackRest on one PostgreSQL 15 cluster, both with zstd (level 3)
# and encryption, to a local repository; then a WAL throughput run with gsdr
# as archive_command.
#
#   SCALE=100 WAL_SECS=120 scripts/bench-postgres.sh
#
# Prints timings, then (last lines) backup_ratio=, restore_ratio=, ratio=
# (gsdr time ÷ pgBackRest time; lower is better; ratio = the larger).
# Restore times are the unpack into an empty directory (no WAL replay) for both.
set -euo pipefail

SCALE=${SCALE:-100}
WAL_SECS=${WAL_SECS:-120}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
GSDR=${GSDR:-$ROOT/target/release/gsdr}
PROCS=${PROCS:-2}

if [ ! -x "$GSDR" ]; then
  (cd "$ROOT" && { [ -f scripts/env.sh ] && source scripts/env.sh; cargo build --release --bin gsdr; })
fi
command -v pgbackrest >/dev/null || { echo "pgbackrest is not installed (apt-get install pgbackrest)" >&2; exit 2; }

W=$(mktemp -d /tmp/gsdr-bench-pg.XXXXXX)
chmod 755 "$W"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres:postgres "$W"
cleanup() {
  for d in "$W/data"; do [ -f "$d/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1 || true; done
  rm -rf "$W"
}
trap cleanup EXIT
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2-$1:.2f}')"; }

# --- keys, policy, pgBackRest config
as_pg "$GSDR" keygen -o "$W/identity.txt" > "$W/recipient.txt"
cat > "$W/policy.toml" <<TOML
name = "bench"
[encryption]
recipients = ["$(cat "$W/recipient.txt")"]
identity_file = "$W/identity.txt"
[compression]
level = 3
workers = $PROCS
[targets.local]
kind = "fs"
path = "$W/gsdr-repo"
[defaults]
target = "local"
[sources.pg]
kind = "postgres"
[sources.pg.postgres]
host = "127.0.0.1"
port = $PORT
pg_bin = "$PG_BIN"
gsdr_bin = "$GSDR"
TOML
cat > "$W/pgbackrest.conf" <<CONF
[global]
repo1-path=$W/pgbr-repo
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=bench-only-passphrase-0123456789
compress-type=zst
compress-level=3
repo1-retention-full=99
process-max=$PROCS
start-fast=y
log-level-console=warn
log-level-file=off
lock-path=$W/pgbr-lock
[bench]
pg1-path=$W/data
pg1-port=$PORT
pg1-socket-path=$W
CONF
[ "$(id -u)" = 0 ] && chown -R postgres:postgres "$W"
PGBR="pgbackrest --config=$W/pgbackrest.conf --stanza=bench"

# --- cluster: both tools archive during the backup comparison
as_pg "$PG_BIN/initdb" -D "$W/data" -U postgres --auth=trust -E UTF8 >/dev/null
cat >> "$W/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$W'
wal_level = replica
max_wal_senders = 4
max_wal_size = 4GB
archive_mode = on
archive_command = '$GSDR --policy $W/policy.toml -q wal-push --source pg %p && $PGBR archive-push %p'
CONF
as_pg "$PG_BIN/pg_ctl" -D "$W/data" -l "$W/server.log" -w start >/dev/null
PSQL="$PG_BIN/psql -h 127.0.0.1 -p $PORT -U postgres -XAtq"
as_pg $PGBR stanza-create >/dev/null
echo "pgbench -i -s $SCALE ..."
t0=$(now); "$PG_BIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -i -q -s "$SCALE" postgres 2>/dev/null; t1=$(now)
echo "init: $(secs $t0 $t1) s, database $($PSQL -c "SELECT pg_size_pretty(pg_database_size('postgres'))")"
$PSQL -c "CHECKPOINT" >/dev/null
ready() { $PSQL -c "SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'"; }
drain() { while [ "$(ready)" -gt 0 ]; do sleep 0.5; done; }
drain   # neither backup should wait for the archive backlog of the load

# --- full backups
t0=$(now); as_pg "$GSDR" --policy "$W/policy.toml" -q backup --source pg >/dev/null; t1=$(now)
GSDR_BACKUP=$(secs $t0 $t1)
drain
t0=$(now); as_pg $PGBR --type=full backup; t1=$(now)
PGBR_BACKUP=$(secs $t0 $t1)
echo "backup: gsdr ${GSDR_BACKUP}s ($(du -sh "$W/gsdr-repo/pg/base" | cut -f1)), pgbackrest ${PGBR_BACKUP}s ($(du -sh "$W/pgbr-repo/backup" | cut -f1))"

# --- restores (unpack into an empty directory)
t0=$(now); as_pg "$GSDR" --policy "$W/policy.toml" -q restore --source pg --to-dir "$W/r-gsdr" --latest >/dev/null; t1=$(now)
GSDR_RESTORE=$(secs $t0 $t1)
as_pg mkdir -m 700 "$W/r-pgbr"
t0=$(now); as_pg $PGBR --pg1-path="$W/r-pgbr" restore; t1=$(now)
PGBR_RESTORE=$(secs $t0 $t1)
echo "restore: gsdr ${GSDR_RESTORE}s, pgbackrest ${PGBR_RESTORE}s ($(du -sh "$W/r-gsdr" | cut -f1) restored)"
rm -rf "$W/r-gsdr" "$W/r-pgbr"

# --- WAL throughput: gsdr alone as archive_command, pgbench at full speed
$PSQL -c "ALTER SYSTEM SET archive_command = '$GSDR --policy $W/policy.toml -q wal-push --source pg %p'" >/dev/null
$PSQL -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
LSN0=$($PSQL -c "SELECT pg_current_wal_lsn()")
A0=$($PSQL -c "SELECT archived_count FROM pg_stat_archiver")
F0=$($PSQL -c "SELECT failed_count FROM pg_stat_archiver")
"$PG_BIN/pgbench" -h 127.0.0.1 -p "$PORT" -U postgres -c 4 -j 2 -T "$WAL_SECS" -N postgres > "$W/pgbench.out" 2>&1 &
BENCH=$!
t0=$(now); MAXLAG=0
while kill -0 $BENCH 2>/dev/null; do
  l=$(ready); [ "$l" -gt "$MAXLAG" ] && MAXLAG=$l; sleep 1
done
wait $BENCH || true
t_bench=$(now)
LSN1=$($PSQL -c "SELECT pg_current_wal_lsn()")
$PSQL -c "SELECT pg_switch_wal()" >/dev/null
while [ "$(ready)" -gt 0 ]; do l=$(ready); [ "$l" -gt "$MAXLAG" ] && MAXLAG=$l; sleep 0.5; done
t1=$(now)
A1=$($PSQL -c "SELECT archived_count FROM pg_stat_archiver")
F1=$($PSQL -c "SELECT failed_count FROM pg_stat_archiver")
WAL_MB=$($PSQL -c "SELECT round(pg_wal_lsn_diff('$LSN1', '$LSN0') / 1048576.0)")
SEGS=$((A1 - A0))
echo "wal: pgbench $(grep -o 'tps = [0-9.]*' "$W/pgbench.out" | head -1), ${WAL_MB} MiB WAL in $(secs $t0 $t_bench)s; $SEGS segments archived in $(secs $t0 $t1)s = $(python3 -c "print(f'{$SEGS/($t1-$t0):.2f}')") segments/s; max archiver lag $MAXLAG ready segments; catch-up after load $(secs $t_bench $t1)s; failures $((F1 - F0))"
as_pg "$GSDR" --policy "$W/policy.toml" -q wal-verify --source pg | tail -n 3

python3 - "$GSDR_BACKUP" "$PGBR_BACKUP" "$GSDR_RESTORE" "$PGBR_RESTORE" "$SCALE" <<'PY'
import sys
gb, pb, gr, pr, scale = map(float, sys.argv[1:])
b, r = gb / pb, gr / pr
print(f"scale={int(scale)}")
print(f"backup_ratio={b:.2f}")
print(f"restore_ratio={r:.2f}")
print(f"ratio={max(b, r):.2f}")
PY
