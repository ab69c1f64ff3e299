#!/usr/bin/env bash
# The main job on the embedded default data. (Grows into the full Fashion-MNIST demo.)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
./target/release/sg2 --help
