#!/usr/bin/env bash
# Installs libtorch (from PyPI's torch wheel) into a cache outside the repository and builds sg2 in release.
# Idempotent: a second run with everything present takes seconds.
#   SG2_TORCH_HOME   where the torch environment lives (default: ${XDG_CACHE_HOME:-$HOME/.cache}/sg2/torch-2.11.0)
#   SG2_SKIP_BUILD=1 only prepare the environment
set -euo pipefail

TORCH_VERSION=2.11.0
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SG2_TORCH_HOME=${SG2_TORCH_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/sg2/torch-$TORCH_VERSION}
VENV=$SG2_TORCH_HOME/venv
STAMP=$VENV/.sg2-ready-$TORCH_VERSION-tb

say() { echo "[setup] $*" >&2; }
die() { echo "[setup] error: $*" >&2; exit 1; }

command -v python3 >/dev/null || die "python3 not found: install it (Debian: apt-get install python3 python3-venv python3-pip)"
command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs"

if [ ! -f "$STAMP" ]; then
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating a Python environment in $VENV"
    mkdir -p "$SG2_TORCH_HOME"
    python3 -m venv "$VENV" 2>/dev/null || die "python3 cannot create a virtual environment: install venv support (Debian: apt-get install python3-venv)"
  fi
  "$VENV/bin/python" -m pip --version >/dev/null 2>&1 || die "pip is missing in $VENV: install it (Debian: apt-get install python3-pip python3-venv)"
  say "installing torch==$TORCH_VERSION (libtorch), numpy, scipy, tensorboard (event-file checks), and hera + pyyaml (Argo manifest checks) into $VENV (once; several GB)"
  "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" numpy scipy tensorboard hera==7.1.0 pyyaml \
    || die "pip could not install torch==$TORCH_VERSION from PyPI"
  touch "$STAMP"
fi

TORCH_LIB=$("$VENV/bin/python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
[ -f "$TORCH_LIB/libtorch_cpu.so" ] || die "libtorch not found in $TORCH_LIB: remove $STAMP and re-run"

# Other scripts source this file's output.
mkdir -p "$ROOT/target"
cat > "$ROOT/target/sg2-env.sh" <<ENV
export PATH="$VENV/bin:\$PATH"
export LIBTORCH_USE_PYTORCH=1
export SG2_PYTHON="$VENV/bin/python"
ENV

if [ "${SG2_SKIP_BUILD:-0}" != 1 ]; then
  say "building sg2 (release)"
  (cd "$ROOT" && PATH="$VENV/bin:$PATH" LIBTORCH_USE_PYTORCH=1 cargo build --release --quiet) || die "cargo build failed"
  say "ready: $ROOT/target/release/sg2"
fi
