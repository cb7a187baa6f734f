#!/usr/bin/env bash
# The demo: gsdr's main job on local throwaway services.
# Installs what it needs, starts throwaway servers on loopback (the ports
# policies/local.toml names), backs up every source of policies/local.toml,
# lists and verifies the backups, runs a DR drill and prints its report.
# Everything it makes lives in .gsdr-demo/ (removed at the start of each run);
# the servers are stopped when it ends.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
echo "== building gsdr"
cargo build --quiet --bin gsdr
GSDR="$PWD/target/debug/gsdr"
VENV="${GSDR_TEST_VENV:-$PWD/.venv}"
DEMO="$PWD/.gsdr-demo"
POLICY="policies/local.toml"
# Drills start scratch MongoDB servers (nx-27017) from the venv.
export PATH="$VENV/bin:$PATH"

# Nothing the demo writes is world-readable or world-writable.
umask 0007
rm -rf "$DEMO"; mkdir -p "$DEMO/run"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "server on port $1 did not start" >&2; return 1; }
need_port() { port_free "$1" || { echo "port $1 is in use: the demo's $2 needs it (see policies/local.toml)" >&2; exit 2; }; }

echo "== keys"
"$GSDR" keygen -o "$DEMO/identity.txt" > "$DEMO/recipients.txt"
echo "recipient: $(cat "$DEMO/recipients.txt") (identity in $DEMO/identity.txt, mode 0600)"

echo "== starting throwaway servers"
need_port 39000 "S3 server (off-site target)"
"$VENV/bin/python" -m moto.server -H 127.0.0.1 -p 39000 > "$DEMO/run/moto.log" 2>&1 &
PIDS+=($!)
wait_port 39000
export GSDR_DEMO_S3_ACCESS_KEY_ID=demo GSDR_DEMO_S3_SECRET_ACCESS_KEY=demo-secret
"$VENV/bin/python" - <<'PY'
import urllib.request
req = urllib.request.Request("http://127.0.0.1:39000/gsdr-offsite", method="PUT")
urllib.request.urlopen(req).read()
PY
echo "S3 (moto) on 127.0.0.1:39000, bucket gsdr-offsite"

need_port 39017 "MongoDB (nx-27017)"; need_port 39379 "Redis"; need_port 39432 "PostgreSQL"
"$VENV/bin/nx-27017" --db memory --host 127.0.0.1 -p 39017 --log-file "$DEMO/run/nx.log" --pid-file "$DEMO/run/nx.pid" > /dev/null 2>&1 &
PIDS+=($!)
redis-server --port 39379 --bind 127.0.0.1 --dir "$DEMO/run" --save "" --appendonly no --enable-debug-command local --daemonize no > "$DEMO/run/redis.log" 2>&1 &
PIDS+=($!)
export GSDR_DEMO_MONGO_URI="mongodb://127.0.0.1:39017/?directConnection=true"

# PostgreSQL refuses to run as root: as root, run it as the `postgres` user.
PGBIN=/usr/lib/postgresql/15/bin
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
# As root, the archiver (user postgres, running gsdr wal-push) shares the
# backups with gsdr (root) through the group: the demo folder belongs to group
# postgres, its folders are setgid (new files and folders inherit the group)
# and group-writable; others get nothing (umask 0007, set above).
mkdir -p "$DEMO/backups" "$DEMO/pg" "$DEMO/scratch" "$DEMO/runbooks"
# As root, PostgreSQL (and the gsdr wal-push/wal-fetch it runs) is user postgres:
# it gets the demo folders and the demo identity (restore_command decrypts WAL).
if [ "$(id -u)" -eq 0 ]; then
  chgrp -R postgres "$DEMO"
  find "$DEMO" -type d -exec chmod g+rwxs,o-rwx {} +
  chown postgres "$DEMO/pg" "$DEMO/backups" "$DEMO/identity.txt"
fi
as_pg "$PGBIN/initdb" -D "$DEMO/pg/data" -U postgres --auth=trust > "$DEMO/run/initdb.log"
cat >> "$DEMO/pg/data/postgresql.conf" <<CONF
port = 39432
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DEMO/pg'
archive_mode = on
archive_timeout = 30
archive_command = 'cd $PWD && GSDR_LOG=warn $GSDR --policy $POLICY -q wal-push --source postgres $DEMO/pg/data/%p'
CONF
as_pg "$PGBIN/pg_ctl" -D "$DEMO/pg/data" -l "$DEMO/pg/server.log" -w start > /dev/null
stop_pg() { as_pg "$PGBIN/pg_ctl" -D "$DEMO/pg/data" -m fast stop > /dev/null 2>&1 || true; }
trap 'stop_pg; cleanup' EXIT
wait_port 39017; wait_port 39379; wait_port 39432
echo "MongoDB (nx-27017) :39017, Redis :39379, PostgreSQL 15 :39432 (archiving with gsdr wal-push)"

echo "== loading demo data (glucose readings)"
PSQL=("$PGBIN/psql" -h 127.0.0.1 -p 39432 -U postgres -q -v ON_ERROR_STOP=1)
"${PSQL[@]}" -c "CREATE TABLE accounts (id serial PRIMARY KEY, name text, created timestamptz DEFAULT now());
                 INSERT INTO accounts (name) SELECT 'patient-' || g FROM generate_series(1, 20000) g;"
redis-cli -p 39379 DEBUG POPULATE 50000 reading 64 > /dev/null
redis-cli -p 39379 HSET session:demo user p00042 expires 3600 > /dev/null
"$VENV/bin/python" - <<'PY'
import random, pymongo, datetime
c = pymongo.MongoClient("mongodb://127.0.0.1:39017/?directConnection=true")
now = datetime.datetime.now(datetime.timezone.utc)
docs = [{"patient": f"p{i % 977:05}", "mg_dl": random.randint(40, 400), "ts": now - datetime.timedelta(minutes=5 * i)} for i in range(20000)]
c.glucosync.readings.insert_many(docs)
c.glucosync.predictions.insert_many([{"patient": f"p{i:05}", "predicted_mg_dl_30m": 120.5} for i in range(977)])
print("mongo: %d readings" % c.glucosync.readings.count_documents({}))
PY

echo "== gsdr policy check --connect"
"$GSDR" --policy "$POLICY" policy check --connect

echo "== gsdr canary (heartbeats the drill's RPO is measured from)"
"$GSDR" --policy "$POLICY" canary

echo "== gsdr backup (every source)"
"$GSDR" --policy "$POLICY" backup
# Make sure the WAL up to now is archived, so the drill can replay it.
seg=$("${PSQL[@]}" -Atc "SELECT pg_walfile_name(pg_switch_wal())")
for _ in $(seq 1 120); do
  [ "$("${PSQL[@]}" -Atc "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")" \> "$seg" ] && break
  [ "$("${PSQL[@]}" -Atc "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")" = "$seg" ] && break
  sleep 0.5
done
echo "WAL archived up to $seg"

echo "== gsdr list"
"$GSDR" --policy "$POLICY" list

echo "== gsdr verify (newest backup of every source)"
"$GSDR" --policy "$POLICY" verify

echo "== gsdr replicate (off-site copy to the S3 target)"
"$GSDR" --policy "$POLICY" replicate
"$GSDR" --policy "$POLICY" replicate --check

echo "== gsdr drill: node-loss (without its Velero step: no Kubernetes here)"
"$VENV/bin/python" - "$DEMO/runbooks/node-loss.toml" <<'PY'
import sys, re
text = open("runbooks/node-loss.toml").read()
blocks = text.split("[[steps]]")
keep = [blocks[0]] + [b for b in blocks[1:] if 'kind = "velero_restore"' not in b]
open(sys.argv[1], "w").write("[[steps]]".join(keep))
PY
set +e
"$GSDR" --policy "$POLICY" drill --scenario node-loss --out "$DEMO/reports"
code=$?
set -e
echo
for f in "$DEMO"/reports/*/report.md; do cat "$f"; done
echo
# The environment to use the CLI by hand afterwards (README: "After the demo").
# Policy paths are relative to the working directory: use it from the repository root.
cat > "$DEMO/env" <<ENV
# Written by scripts/demo.sh: source it from the repository root.
export PATH="$VENV/bin:$PWD/target/debug:\$PATH"
export GSDR_POLICY="$PWD/$POLICY"
export GSDR_DEMO_S3_ACCESS_KEY_ID="$GSDR_DEMO_S3_ACCESS_KEY_ID"
export GSDR_DEMO_S3_SECRET_ACCESS_KEY="$GSDR_DEMO_S3_SECRET_ACCESS_KEY"
export GSDR_DEMO_MONGO_URI="$GSDR_DEMO_MONGO_URI"
ENV
echo "== demo finished (drill exit code $code): reports in $DEMO/reports (open report.html in a browser), backups in $DEMO/backups"
exit $code
