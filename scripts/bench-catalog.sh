#!/usr/bin/env bash
# Catalog benchmark (issue #16, item 1): does a look at one source stay cheap
# when the bucket is big?
#
# Fills a folder target and a moto bucket with synthetic signed backups of
# one source `app` (N = 1,000 then 10,000), 100,000 WAL objects under
# `app/wal/`, and 4 other sources of 1,000 backups each, written straight
# into the store by `examples/catalog_fill.rs` (as an older gsdr would: no
# index). The off-site target of `app` is a folder holding the same backups.
# For each N and target it runs, with GSDR_STORE_STATS=1 (requests counted
# in gsdr's store wrapper; a listing counts one request per 1,000 keys, the
# pages S3 answers):
#   list_cold     the first `gsdr list --source app` (reads the manifests the
#                 index lacks, writes the index); list_cold_off: the same on
#                 the off-site target
#   list          `gsdr list --source app`
#   prune         `gsdr prune --dry-run --source app` (primary and off-site)
#   replicate     `gsdr replicate --check --source app`
#   drill_plan    `gsdr restore --scenario app-loss --plan`
# and prints the time (s) and request count of each. Then 10,000 more
# backups of other sources are added to the folder target and `list` runs
# again: its request count must not change.
#
# Acceptance: list at 10k backups under 1 s on the folder target; requests
# independent of the other sources' backups. The last lines are exactly:
#   list_10k_s=…
#   requests_per_list_10k=…
# (both of the folder target). Usage:
#   [PROFILE=debug | GSDR_BIN=path] [NO_S3=1] scripts/bench-catalog.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
VENV="${GSDR_TEST_VENV:-$PWD/.venv}"
[ -n "${NO_S3:-}" ] || [ -x "$VENV/bin/moto_server" ] || { echo "missing $VENV/bin/moto_server: run scripts/install-deps.sh (or NO_S3=1)" >&2; exit 2; }
if [ "${PROFILE:-release}" = debug ]; then
  PROFILE_FLAG=(); DIR=debug
else
  PROFILE_FLAG=(--release); DIR=release
fi
cargo build --quiet "${PROFILE_FLAG[@]}" --example catalog_fill
FILL="$PWD/target/$DIR/examples/catalog_fill"
if [ -n "${GSDR_BIN:-}" ]; then
  GSDR="$GSDR_BIN"
else
  cargo build --quiet "${PROFILE_FLAG[@]}" --bin gsdr; GSDR="$PWD/target/$DIR/gsdr"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gsdr-bench-catalog.XXXXXX")"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "server on port $1 did not start" >&2; exit 1; }

VK=$("$GSDR" keygen --signing -o "$WORK/sign.key")
RECIPIENT=$("$GSDR" keygen -o "$WORK/identity.txt")
HEADER="name = \"bench\"
[encryption]
recipients = [\"$RECIPIENT\"]
identity_file = \"$WORK/identity.txt\""
mkdir -p "$WORK/runbooks" "$WORK/scratch"
cat >"$WORK/runbooks/app-loss.toml" <<'EOF'
name = "app-loss"
title = "app is lost"
description = "Restore app."
[[steps]]
name = "restore"
kind = "restore_command_source"
source = "app"
EOF
common() { # $1: primary target name
  cat <<EOF
[defaults]
target = "$1"
offsite = "off"
[sources.app]
kind = "command"
[sources.app.command]
argv = ["true"]
[signing]
verify_keys = ["$VK"]
[drills]
runbooks_dir = "$WORK/runbooks"
scratch_dir = "$WORK/scratch"
EOF
}
cat >"$WORK/fs.toml" <<EOF
$HEADER
[targets.local]
kind = "fs"
path = "$WORK/fs"
[targets.off]
kind = "fs"
path = "$WORK/off"
$(common local)
EOF

if [ -z "${NO_S3:-}" ]; then
  S3P=$(free_port)
  "$VENV/bin/moto_server" -H 127.0.0.1 -p "$S3P" >"$WORK/moto.log" 2>&1 & PIDS+=($!)
  wait_port "$S3P"
  python3 -c "import urllib.request as u; u.urlopen(u.Request('http://127.0.0.1:$S3P/gsdr', method='PUT')).read()"
  echo test >"$WORK/s3-key"; echo test >"$WORK/s3-secret"
  S3_BODY="kind = \"s3\"
endpoint = \"http://127.0.0.1:$S3P\"
bucket = \"gsdr\"
prefix = \"bench\"
access_key_id = { file = \"$WORK/s3-key\" }
secret_access_key = { file = \"$WORK/s3-secret\" }"
  echo "$S3_BODY" >"$WORK/s3-target.toml"
  cat >"$WORK/s3.toml" <<EOF
$HEADER
[targets.s3]
$S3_BODY
[targets.off]
kind = "fs"
path = "$WORK/off"
$(common s3)
EOF
fi

# fill TARGET SOURCE FIRST COUNT WAL: into the folder (and its off-site copy) or moto.
fill() {
  "$FILL" "$1" "$2" "$3" "$4" "$5" "$WORK/sign.key" 2>&1 | sed 's/^/  /'
}
fill_fs() {
  fill "$WORK/fs" "$@"
  # The off-site copy holds the same backups (not the WAL: it is not read).
  fill "$WORK/off" "$1" "$2" "$3" 0
}
fill_s3() { [ -n "${NO_S3:-}" ] || fill "$WORK/s3-target.toml" "$@"; }

declare -A SECS REQS
# measure LABEL POLICY ARGS…: runs gsdr, records time and requests.
measure() {
  local label=$1 policy=$2; shift 2
  local t0 t1 stats
  t0=$(date +%s.%N)
  local rc=0
  GSDR_STORE_STATS=1 GSDR_LOG=warn "$GSDR" --policy "$policy" "$@" >"$WORK/out.txt" 2>"$WORK/err.txt" || rc=$?
  # Exit 1 is a finding (replicate --check: something missing); 2 an error.
  if [ "$rc" -gt 1 ]; then echo "gsdr $* failed ($rc):" >&2; cat "$WORK/err.txt" >&2; exit 1; fi
  t1=$(date +%s.%N)
  stats=$(grep -o 'requests=[0-9]*' "$WORK/err.txt" | tail -1 | cut -d= -f2)
  SECS[$label]=$(python3 -c "print(f'{$t1-$t0:.3f}')")
  REQS[$label]=$stats
  printf '%-28s %8ss %8s requests   (%s)\n' "$label" "${SECS[$label]}" "$stats" \
    "$(grep -o 'gsdr-store-stats: .*' "$WORK/err.txt" | cut -d' ' -f3-)"
}
run_all() { # $1: N label, $2: target label, $3: policy
  measure "list_cold_${1}_$2" "$3" list --source app
  measure "list_cold_off_${1}_$2" "$3" list --source app --target off
  measure "list_${1}_$2" "$3" list --source app
  measure "prune_${1}_$2" "$3" prune --dry-run --source app
  measure "replicate_${1}_$2" "$3" replicate --check --source app
  measure "drill_plan_${1}_$2" "$3" restore --scenario app-loss --plan
}

echo "== fill: 4 other sources x 1000 backups, 100000 WAL objects of app, app 0..1000"
for o in 1 2 3 4; do fill_fs "other$o" 0 1000 0; done
fill "$WORK/fs" app 0 1000 100000; fill "$WORK/off" app 0 1000 0
if [ -z "${NO_S3:-}" ]; then
  T0=$(date +%s)
  for o in 1 2 3 4; do fill_s3 "other$o" 0 1000 0; done
  fill_s3 app 0 1000 100000
  echo "  moto fill (1k): $(( $(date +%s) - T0 ))s"
fi
echo "== N=1000"
run_all 1k fs "$WORK/fs.toml"
[ -n "${NO_S3:-}" ] || run_all 1k s3 "$WORK/s3.toml"

echo "== fill: app 1000..10000"
fill_fs app 1000 9000 0
if [ -z "${NO_S3:-}" ]; then
  T0=$(date +%s); fill_s3 app 1000 9000 0; echo "  moto fill (9k more): $(( $(date +%s) - T0 ))s"
fi
echo "== N=10000"
run_all 10k fs "$WORK/fs.toml"
[ -n "${NO_S3:-}" ] || run_all 10k s3 "$WORK/s3.toml"

echo "== 10000 more backups of other sources (folder target)"
for o in 5 6; do fill "$WORK/fs" "other$o" 0 5000 0; done
measure list_10k_fs_more_others "$WORK/fs.toml" list --source app
same=$([ "${REQS[list_10k_fs_more_others]}" = "${REQS[list_10k_fs]}" ] && echo yes || echo NO)
echo "requests_independent_of_other_sources=$same"
echo "list_10k_s=${SECS[list_10k_fs]}"
echo "requests_per_list_10k=${REQS[list_10k_fs]}"
