#!/usr/bin/env bash
# Downloads the official metric detectors into DIR (default $SG2_HOME/detectors, SG2_HOME=~/.cache/sg2):
#   inception-2015-12-05.pt  (FID, KID, IS)   vgg16.pt  (precision/recall, PPL)
# from NVIDIA's stylegan2-ada-pytorch CDN; where that fails, the stylegan3 pickles from NGC are downloaded and
# converted to TorchScript (needs python3 with torch). Files already present are kept.
set -euo pipefail
DIR=${1:-${SG2_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/sg2}/detectors}
CDN=https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics
NGC=https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics
PY=${SG2_PYTHON:-python3}
mkdir -p "$DIR"

fetch() { # url dest
  if command -v curl >/dev/null; then curl -fL --retry 3 -o "$2" "$1"; else wget -O "$2" "$1"; fi
}

for f in inception-2015-12-05.pt vgg16.pt; do
  if [ -s "$DIR/$f" ]; then echo "$DIR/$f: present"; continue; fi
  tmp="$DIR/.$f.$$.tmp"
  trap 'rm -f "$tmp" "$tmp.pkl"' EXIT
  if fetch "$CDN/$f" "$tmp"; then
    :
  elif fetch "$NGC/${f%.pt}.pkl" "$tmp.pkl"; then
    "$PY" -c "import pickle, sys, torch; torch.jit.save(pickle.load(open(sys.argv[1], 'rb')), sys.argv[2])" "$tmp.pkl" "$tmp"
    rm -f "$tmp.pkl"
  else
    echo "$f: download failed from $CDN and $NGC" >&2
    exit 1
  fi
  if command -v "$PY" >/dev/null && "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -c "import sys, torch; torch.jit.load(sys.argv[1])" "$tmp" || { echo "$f: not a TorchScript file" >&2; exit 1; }
  fi
  mv "$tmp" "$DIR/$f"
  echo "$DIR/$f: $(wc -c <"$DIR/$f") bytes"
done
