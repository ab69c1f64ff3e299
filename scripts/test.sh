#!/usr/bin/env bash
# Sets up (libtorch + release build), checks formatting and lints, and runs the whole test suite.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
# shellcheck disable=SC1091
source target/sg2-env.sh
# Unformatted code or a lint warning fails the run before the (long) tests start.
for tool in fmt clippy; do
  cargo "$tool" --version >/dev/null 2>&1 || { echo "[test] error: cargo $tool is missing: rustup component add rustfmt clippy" >&2; exit 1; }
done
cargo fmt --check
cargo clippy --release --all-targets --quiet -- -D warnings
# Tests run in release so they share the build that setup made.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --release --no-fail-fast "$@"
else
  cargo test --release --no-fail-fast "$@"
fi
