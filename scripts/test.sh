#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need,
# then runs formatting and lint checks and every test (unit, integration
# against real servers started by the tests, end-to-end CLI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
source scripts/env.sh
export GSDR_TEST_VENV="${GSDR_TEST_VENV:-$PWD/.venv}"
# A one-off run gains nothing from incremental state, and it is the largest
# directory of a cold build (about 0.7 GiB).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# A cold build with the tests needs about 4 GiB; say so up front instead of
# failing half-way with "No space left on device".
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
free_mib=$(df -Pm "$target_dir" | awk 'NR == 2 {print $4}')
if [ "${free_mib:-0}" -lt 4096 ]; then
  echo "warning: only ${free_mib} MiB free under $target_dir; a cold build needs about 4 GiB" >&2
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== architecture: layers, no import cycle, engines confined (docs/ARCHITECTURE.md)"
cargo test --quiet --test it -- architecture::
echo "== cargo test"
# Integration tests start real servers on free ports; 4 at a time fits 2 cores.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
cargo test --all-targets -- --test-threads "${GSDR_TEST_THREADS:-4}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line over every test binary (cargo prints one per target, the
# last often for a target with no tests).
passed=$(grep -Eo '^test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s += $1} END {print s + 0}')
echo
echo "tests: $passed passed, $failed failed"
exit "$status"
