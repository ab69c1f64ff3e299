#!/usr/bin/env bash
# The main job on one machine: Fashion-MNIST -> 32x32 dataset -> a short training run -> images from seeds, and
# metrics when the detector files are present. Unattended; a re-run reuses the dataset and resumes training.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: bash scripts/demo.sh [OPTIONS]

  --source DIR        Fashion-MNIST (or MNIST) IDX files: train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz].
                      Default /usr/share/datasets/fashion-mnist, installed from Debian's dataset-fashion-mnist
                      package when missing.
  --max-images N      Use only the first N training images (default: all 60,000).
  --kimg N            Train until N thousand images have been shown (default: configs/fmnist32.toml's total_kimg,
                      about ten minutes on 2 CPU cores). Larger values train longer and look better; a re-run with
                      a larger N continues from the last snapshot.
  --set KEY=VALUE     Override a key of configs/fmnist32.toml for training, e.g. --set training.g_lr=0.002
                      (repeatable; see docs/CONFIG.md).
  --seeds LIST        Seeds of the generated images (default 6600-6605).
  --trunc PSI         Truncation psi of the generated images (default 1, none).
  --metrics LIST      Metrics computed when the detector files are present (default fid50k_full).
  --metric-images N   Generated and real images per metric (default 5000, which the printed name shows; 0: the
                      metric's own count, e.g. 50,000 for fid50k_full, slow on a CPU).
  --detector-dir DIR  Detector files for the metrics (default $SG2_HOME/detectors, SG2_HOME=~/.cache/sg2).
  --threads N         CPU threads (default: all cores).
  --workdir DIR       Where data/, runs/ and out/ go (default: the repository).
  -h, --help          This help.

Environment: SG2_BIN=PATH uses that sg2 binary and skips the set-up step.
Writes data/fmnist/ (the dataset), runs/NNNNN-fmnist32-fmnist/ (checkpoints, fakes grids, logs, TensorBoard) and
out/demo/ (images of the seeds and their grid).
EOF
}

say() { echo "[demo] $*" >&2; }
die() { echo "[demo] error: $*" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

SOURCE="" MAX_IMAGES="" KIMG="" SEEDS=6600-6605 TRUNC=1 METRICS=fid50k_full METRIC_IMAGES=5000 THREADS="" WORKDIR=$ROOT
SETS=()
SG2_HOME=${SG2_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/sg2}
DETECTOR_DIR=$SG2_HOME/detectors
while [ $# -gt 0 ]; do
  case "$1" in
    --source) SOURCE=${2:?--source needs a folder}; shift 2 ;;
    --max-images) MAX_IMAGES=${2:?--max-images needs a number}; shift 2 ;;
    --kimg) KIMG=${2:?--kimg needs a number}; shift 2 ;;
    --set) SETS+=(--set "${2:?--set needs KEY=VALUE}"); shift 2 ;;
    --seeds) SEEDS=${2:?--seeds needs a list}; shift 2 ;;
    --trunc) TRUNC=${2:?--trunc needs a number}; shift 2 ;;
    --metrics) METRICS=${2:?--metrics needs a list}; shift 2 ;;
    --metric-images) METRIC_IMAGES=${2:?--metric-images needs a number}; shift 2 ;;
    --detector-dir) DETECTOR_DIR=${2:?--detector-dir needs a folder}; shift 2 ;;
    --threads) THREADS=${2:?--threads needs a number}; shift 2 ;;
    --workdir) WORKDIR=${2:?--workdir needs a folder}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
done

# Paths given relative to where the demo was started.
abs() { case "$1" in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
[ -z "$SOURCE" ] || SOURCE=$(abs "$SOURCE")
[ -z "${SG2_BIN:-}" ] || SG2_BIN=$(abs "$SG2_BIN")
DETECTOR_DIR=$(abs "$DETECTOR_DIR")
WORKDIR=$(abs "$WORKDIR")
CONFIG=$ROOT/configs/fmnist32.toml
mkdir -p "$WORKDIR" || die "$WORKDIR: cannot create it"
cd "$WORKDIR"
DATA=data/fmnist
RUNS=runs
OUT=out/demo
DEFAULT_SOURCE=/usr/share/datasets/fashion-mnist

# 1. libtorch and the release binary.
if [ -z "${SG2_BIN:-}" ]; then
  bash "$ROOT/scripts/setup.sh"
  SG2_BIN=$ROOT/target/release/sg2
fi
[ -x "$SG2_BIN" ] || die "$SG2_BIN: not an executable"
sg2() { "$SG2_BIN" ${THREADS:+--threads "$THREADS"} "$@"; }

# 2. The raw data.
have_idx() { compgen -G "$1/train-images-idx3-ubyte*" >/dev/null && compgen -G "$1/train-labels-idx1-ubyte*" >/dev/null; }
if [ -z "$SOURCE" ]; then
  SOURCE=$DEFAULT_SOURCE
  if ! have_idx "$SOURCE"; then
    say "installing Debian's dataset-fashion-mnist (Fashion-MNIST in $SOURCE)"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=$(command -v sudo || true)
    command -v apt-get >/dev/null || die "no apt-get here: download Fashion-MNIST's IDX files and pass --source DIR"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
      || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
      || die "could not install dataset-fashion-mnist: install it (apt-get install dataset-fashion-mnist) or pass --source DIR"
  fi
fi
have_idx "$SOURCE" || die "$SOURCE: no train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] there"

# 3. The dataset (kept between runs; --resume continues an interrupted build).
if [ -f "$DATA/manifest.json" ]; then
  say "reusing the dataset in $DATA"
else
  say "building the 32x32 dataset in $DATA"
  sg2 dataset-tool create_mnist --source "$SOURCE" --dest "$DATA" --resolution 32 ${MAX_IMAGES:+--max-images "$MAX_IMAGES"} --resume
fi

# 4. Training; a previous run of this config on this dataset is resumed from its newest snapshot.
SNAPSHOTS="$RUNS/*-fmnist32-fmnist/network-snapshot-*.safetensors"
resume=()
# shellcheck disable=SC2086
if compgen -G "$SNAPSHOTS" >/dev/null; then
  say "resuming training from the newest snapshot under $RUNS"
  resume=(--resume latest)
fi
sg2 train --config "$CONFIG" --data "$DATA" --outdir "$RUNS" ${KIMG:+--kimg "$KIMG"} "${SETS[@]}" "${resume[@]}"
# shellcheck disable=SC2086
NETWORK=$(ls $SNAPSHOTS 2>/dev/null | sort | tail -n 1)
[ -n "$NETWORK" ] || die "training wrote no snapshot under $RUNS"
RUN=$(dirname "$NETWORK")

# 5. Images of the seeds and their grid.
mkdir -p "$OUT"
sg2 generate --network "$NETWORK" --seeds "$SEEDS" --trunc "$TRUNC" --outdir "$OUT/images" --grid "$OUT/grid.png"

# 6. Metrics, when the detectors are there.
METRICS_NOTE=""
if [ -d "$DETECTOR_DIR" ] && [ -n "$(ls -A "$DETECTOR_DIR" 2>/dev/null)" ]; then
  counts=()
  [ "$METRIC_IMAGES" = 0 ] || counts=(--num-gen "$METRIC_IMAGES" --num-real "$METRIC_IMAGES")
  sg2 metrics --network "$NETWORK" --data "$DATA" --metrics "$METRICS" --detector-dir "$DETECTOR_DIR" "${counts[@]}"
  METRICS_NOTE="metrics:   $RUN/metric-*.jsonl"
else
  METRICS_NOTE="metrics:   skipped ($METRICS): no detector files in $DETECTOR_DIR; put them there (or pass
           --detector-dir DIR) and re-run, see docs/CUSTOM_DATA.md"
fi

# 7. Where everything is.
fakes=$(ls "$RUN"/fakes*.png 2>/dev/null | sort || true)
first=$(echo "$fakes" | grep -m1 init || echo "$fakes" | head -n 1)
last=$(echo "$fakes" | grep -v init | tail -n 1)
cat <<EOF

Done.
  dataset:   $DATA  (sg2 dataset-tool info $DATA)
  run:       $RUN
  network:   $NETWORK
  fakes:     ${first:-none} (start) -> ${last:-none} (latest)
  images:    $OUT/images/ (seeds $SEEDS, psi $TRUNC), grid $OUT/grid.png
  $METRICS_NOTE
  curves:    tensorboard --logdir $RUNS
  train on:  bash scripts/demo.sh --kimg N (N above the last run's; it resumes)
EOF
