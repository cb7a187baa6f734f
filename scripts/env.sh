# Sourced by gsdr's scripts: one place for build settings shared by every script.
# mold links the large test binaries several times faster; it is installed by
# scripts/install-deps.sh, and used only when present.
if command -v mold >/dev/null 2>&1; then
  export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-fuse-ld=mold"
fi
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Test servers built by scripts/install-deps.sh (Garage) live here.
export PATH="${GSDR_TOOLS_ROOT:-$HOME/.cache/gsdr-tools}/bin:$PATH"
