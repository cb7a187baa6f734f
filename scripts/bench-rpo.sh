#!/usr/bin/env bash
# Continuous-protection RPO benchmark (issue #14).
#
# Starts PostgreSQL 15, redis-server and two S3 servers (moto: the primary
# target and the off-site one) on free loopback ports, takes one base backup
# of each source, then runs `gsdr daemon` with continuous capture
# (PostgreSQL `capture = "stream"` over a replication slot, Redis
# `continuous = true`) for DURATION seconds (default 180) under a steady write
# load: pgbench at 20 transactions/s, about 50 Redis SETs/s, and a canary
# written into both sources every second. Then the "incident": the load and
# the canaries stop, and two drills run at once after each other: one
# restoring both sources from the primary target, one from the off-site
# target only. The RPO is measured from the restored data (the newest canary
# each restore holds, `measured_by = canary`), never from manifests; the
# drill starts right after the last canary, so the figure is an upper bound.
#
# Targets: RPO <= 15 s for PostgreSQL and Redis on the primary target,
# <= 30 s off-site; the daemon's peak RSS (all its captures) <= 64 MiB per
# stream. The last lines are exactly:
#   rpo_postgres_s=…
#   rpo_redis_s=…
#   rpo_offsite_max_s=…
#   peak_rss_mib=…
# Usage: [PROFILE=debug | GSDR_BIN=path] scripts/bench-rpo.sh [DURATION_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
DURATION="${1:-180}"
VENV="${GSDR_TEST_VENV:-$PWD/.venv}"
PGBIN=/usr/lib/postgresql/15/bin
for p in redis-server redis-cli "$PGBIN/pgbench" "$PGBIN/pg_receivewal" "$VENV/bin/moto_server" python3; do
  command -v "$p" >/dev/null || [ -x "$p" ] || { echo "missing $p: run scripts/install-deps.sh" >&2; exit 2; }
done
# PROFILE=debug measures a debug build (quicker to build; more CPU per byte);
# GSDR_BIN=path measures that binary as it is (no build).
if [ -n "${GSDR_BIN:-}" ]; then
  GSDR="$GSDR_BIN"
elif [ "${PROFILE:-release}" = debug ]; then
  cargo build --quiet --bin gsdr; GSDR="$PWD/target/debug/gsdr"
else
  cargo build --release --quiet --bin gsdr; GSDR="$PWD/target/release/gsdr"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gsdr-bench-rpo.XXXXXX")"
chmod 0755 "$WORK"
PIDS=()
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "server on port $1 did not start" >&2; exit 1; }
S3A=$(free_port); S3B=$(free_port); RP=$(free_port); PGP=$(free_port); MP=$(free_port)

echo "== servers"
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3A" >"$WORK/moto-a.log" 2>&1 & PIDS+=($!)
"$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3B" >"$WORK/moto-b.log" 2>&1 & PIDS+=($!)
redis-server --port "$RP" --bind 127.0.0.1 --dir "$WORK" --save "" --appendonly no \
  --repl-diskless-sync yes --repl-diskless-sync-delay 0 --enable-debug-command local --logfile "$WORK/redis.log" & PIDS+=($!)
wait_port "$S3A"; wait_port "$S3B"; wait_port "$RP"
for port in "$S3A" "$S3B"; do
  python3 -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:$port/gsdr', method='PUT')).read()"
done
mkdir -p "$WORK/pg" "$WORK/pglog" "$WORK/scratch" "$WORK/runbooks"
[ "$(id -u)" -eq 0 ] && chown postgres "$WORK/pg" "$WORK/pglog"
as_pg "$PGBIN/initdb" -D "$WORK/pg" -U postgres --auth=trust >"$WORK/initdb.log"
cat >>"$WORK/pg/postgresql.conf" <<CONF
port = $PGP
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK/pg'
wal_level = replica
max_wal_senders = 4
max_replication_slots = 4
max_slot_wal_keep_size = '1GB'
archive_mode = on
archive_timeout = 60
archive_command = '$GSDR --policy $WORK/policy.toml -q wal-push --source postgres %p'
CONF
echo "host replication all 127.0.0.1/32 trust" >>"$WORK/pg/pg_hba.conf"
as_pg "$PGBIN/pg_ctl" -D "$WORK/pg" -l "$WORK/pglog/server.log" -w start >/dev/null
echo "PostgreSQL :$PGP, Redis :$RP, S3 primary :$S3A, S3 off-site :$S3B"

"$GSDR" keygen -o "$WORK/id.txt" >"$WORK/recipients.txt"
# The scratch PostgreSQL of a drill (user postgres as root) fetches and decrypts WAL.
[ "$(id -u)" -eq 0 ] && chown postgres "$WORK/id.txt"
# moto takes any credentials; PostgreSQL's archiver (user postgres) reads them too.
echo bench >"$WORK/s3-key"; echo bench-secret >"$WORK/s3-secret"
chmod 0644 "$WORK/s3-key" "$WORK/s3-secret" "$WORK/recipients.txt"
cat >"$WORK/policy.toml" <<TOML
name = "bench-rpo"
[encryption]
recipients_file = "$WORK/recipients.txt"
identity_file = "$WORK/id.txt"
[targets.primary]
kind = "s3"
endpoint = "http://127.0.0.1:$S3A"
bucket = "gsdr"
region = "us-east-1"
access_key_id = { file = "$WORK/s3-key" }
secret_access_key = { file = "$WORK/s3-secret" }
[targets.offsite]
kind = "s3"
endpoint = "http://127.0.0.1:$S3B"
bucket = "gsdr"
region = "us-east-1"
access_key_id = { file = "$WORK/s3-key" }
secret_access_key = { file = "$WORK/s3-secret" }
[defaults]
target = "primary"
offsite = "offsite"
objectives = { rto = "1h", rpo = "15s" }
[sources.postgres]
kind = "postgres"
schedule = "0 0 * * * *"
[sources.postgres.postgres]
host = "127.0.0.1"
port = $PGP
user = "postgres"
pg_bin = "$PGBIN"
gsdr_bin = "$GSDR"
capture = "stream"
slot_max_retained = "1GiB"
spool_dir = "$WORK/spool"
[sources.redis]
kind = "redis"
schedule = "0 0 * * * *"
[sources.redis.redis]
addr = "127.0.0.1:$RP"
continuous = true
[daemon]
metrics_addr = "127.0.0.1:$MP"
wal_status_every = "5s"
replicate_every = "60s"
capture_restart = "2s"
missed_runs = "skip"
[drills]
runbooks_dir = "$WORK/runbooks"
scratch_dir = "$WORK/scratch"
TOML
for from in primary offsite; do
  cat >"$WORK/runbooks/rpo-$from.toml" <<TOML
name = "rpo-$from"
title = "Both sources lost: restore them from the $from target"
description = "PostgreSQL and Redis are lost; restore both from the $from target and read their canaries."
from = "$from"
[[steps]]
name = "restore-postgres"
kind = "restore_postgres_pitr"
source = "postgres"
[[steps]]
name = "restore-redis"
kind = "restore_redis"
source = "redis"
[[steps]]
name = "canary-postgres"
kind = "canary_age"
source = "postgres"
after = ["restore-postgres"]
[[steps]]
name = "canary-redis"
kind = "canary_age"
source = "redis"
after = ["restore-redis"]
TOML
done
G=("$GSDR" --policy "$WORK/policy.toml")

echo "== data, then the daemon (continuous capture) and a base backup of each source"
"$PGBIN/pgbench" -h 127.0.0.1 -p "$PGP" -U postgres -i -s 5 -q postgres >"$WORK/pgbench-init.log" 2>&1 || { cat "$WORK/pgbench-init.log" "$WORK/pglog/server.log" >&2; exit 1; }
redis-cli -p "$RP" DEBUG POPULATE 20000 seed 64 >/dev/null
GSDR_LOG=info "${G[@]}" daemon >"$WORK/daemon.log" 2>&1 & DAEMON=$!; PIDS+=($DAEMON)
# The daemon's resident memory every second: the peak alone cannot tell a
# bounded capture from one that grows with the run.
( while kill -0 "$DAEMON" 2>/dev/null; do
    echo "$(date +%s) $(awk '/^VmRSS:/{print $2}' "/proc/$DAEMON/status" 2>/dev/null)" >>"$WORK/rss.log"; sleep 1
  done ) & PIDS+=($!)
wait_port "$MP"
sleep 3
"${G[@]}" -q backup
LOAD_START=$(date +%s)
echo "== load for ${DURATION}s: pgbench 20 tps, ~50 Redis SETs/s, a canary per second"
"$PGBIN/pgbench" -h 127.0.0.1 -p "$PGP" -U postgres -R 20 -T "$DURATION" -n postgres >"$WORK/pgbench.log" 2>&1 & PIDS+=($!)
( while :; do redis-cli -p "$RP" SET "w:$RANDOM" "$(date +%s.%N)" >/dev/null; sleep 0.02; done ) & WRITER=$!; PIDS+=($WRITER)
( while :; do "${G[@]}" -q canary --source postgres --source redis >/dev/null 2>>"$WORK/canary.log" || true; sleep 1; done ) & CANARY=$!; PIDS+=($CANARY)
sleep "$DURATION"
kill "$WRITER" "$CANARY" 2>/dev/null || true
LOAD_END=$(date +%s)
wait "$CANARY" 2>/dev/null || true
echo "== incident: load stopped at $(date -u +%H:%M:%S); drills from the primary and the off-site target"
"${G[@]}" --json drill --scenario rpo-primary --no-store >"$WORK/drill-primary.json" || true
"${G[@]}" --json drill --scenario rpo-offsite --no-store >"$WORK/drill-offsite.json" || true
PEAK_KB=$(awk '/^VmHWM:/{print $2}' "/proc/$DAEMON/status")
STREAMS=2
python3 - "$WORK" "$PEAK_KB" "$STREAMS" "$LOAD_START" "$LOAD_END" <<'PY'
import json, sys
work, peak_kb, streams = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
load_start, load_end = int(sys.argv[4]), int(sys.argv[5])
rss = [tuple(map(int, l.split())) for l in open(f"{work}/rss.log") if len(l.split()) == 2]
def rss_max(lo, hi):
    v = [k for t, k in rss if lo <= t < hi]
    return max(v) / 1024 if v else float("nan")
mid = (load_start + load_end) // 2
print(f"daemon RSS: {rss_max(0, load_start):.1f} MiB at most before the load (base backups, full syncs), "
      f"{rss_max(load_start, mid):.1f} MiB in the load's first half, {rss_max(mid, load_end):.1f} MiB in its second half")
def rpo(name):
    try:
        d = json.load(open(f"{work}/drill-{name}.json"))
    except Exception as e:
        print(f"drill {name}: no JSON report ({e})", file=sys.stderr)
        return {}
    reps = d.get("reports") or [{}]
    d = reps[0].get("report", reps[0])
    for n in (d_ := json.load(open(f"{work}/drill-{name}.json"))).get("not_run", []):
        print(f"drill {name}: did not run: {n.get('error')}", file=sys.stderr)
    out = {}
    for r in d.get("rpo", []):
        if r.get("measured_by") != "canary":
            print(f"drill {name}: {r['source']} measured by {r.get('measured_by')}, not a canary: no figure", file=sys.stderr)
            continue
        out[r["source"]] = r["achieved_secs"]
    for f in d.get("failures", []):
        print(f"drill {name}: {f}", file=sys.stderr)
    return out
p, o = rpo("primary"), rpo("offsite")
fmt = lambda v: "nan" if v is None else f"{v:.1f}"
pg, rd = p.get("postgres"), p.get("redis")
off = max(o.values()) if len(o) == 2 else None
peak = peak_kb / 1024
print(f"primary target: postgres {fmt(pg)} s, redis {fmt(rd)} s (target <= 15 s)")
print(f"off-site target: {', '.join(f'{k} {v:.1f} s' for k, v in sorted(o.items())) or 'no canary figure'} (target <= 30 s)")
print(f"daemon peak RSS {peak:.1f} MiB for {streams} streams ({peak / streams:.1f} MiB per stream; target <= 64)")
print(f"rpo_postgres_s={fmt(pg)}")
print(f"rpo_redis_s={fmt(rd)}")
print(f"rpo_offsite_max_s={fmt(off)}")
print(f"peak_rss_mib={peak:.1f}")
PY
