#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need,
# then runs formatting and lint checks and every test (unit, integration
# against real servers started by the tests, end-to-end CLI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
export GSDR_TEST_VENV="${GSDR_TEST_VENV:-$PWD/.venv}"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
# Integration tests start real servers; two at a time keeps 2-core machines responsive.
cargo test --all-targets -- --test-threads "${GSDR_TEST_THREADS:-4}"
