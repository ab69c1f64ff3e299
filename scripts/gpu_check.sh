#!/usr/bin/env bash
# The GPU checks in one call of under 10 minutes, on a machine with an NVIDIA GPU, the built `sg2` binary and a
# Python with torch (for the comparisons and the reference's bench):
#   1. golden parity on CUDA (TF32 off): the imported tiny32/tiny64 networks generate the golden images;
#   2. an fp16 training step (num_fp16_res, conv_clamp) that stays finite (nan_policy = stop fails otherwise);
#   3. `sg2 bench train --device cuda` at config-f 256x256, batch 32: sec/kimg, images/s, GPU memory;
#   4. the reference's training step on the same GPU and config (REF_DIR: stylegan2-ada-pytorch; its custom ops
#      compile on first use);
#   5. data-parallel training on CUDA: an NCCL group of one (SG2_DIST_BACKEND=nccl), and with 2+ GPUs
#      `--nproc-per-node 2` over NCCL (one GPU per process), a few ticks of a small network each;
# and writes the figures to $OUT/gpu_report.txt (OUT defaults to out/gpu). Each step has its own time limit, so one
# that hangs leaves the others their time.
#   SG2_BIN   the binary (default target/release/sg2)
#   PY        a Python with torch, numpy and Pillow (default python3)
#   REF_DIR   stylegan2-ada-pytorch (default .ref/stylegan2-ada-pytorch in the repo, else
#             ../shared/reference/stylegan2-ada-pytorch; step 4 is skipped when neither exists)
#
# On a GPU machine that receives a copy of the working tree, with the reference beside the repo here:
#   mkdir -p .ref && cp -r ../shared/reference/stylegan2-ada-pytorch .ref/ && echo /.ref/ >> .git/info/exclude
#   then run there, carrying target/release/sg2 and .ref, with a limit of about 9 minutes:
#   LD_LIBRARY_PATH=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib bash scripts/gpu_check.sh
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${SG2_BIN:-$ROOT/target/release/sg2}
PY=${PY:-python3}
REF_DIR=${REF_DIR:-$ROOT/.ref/stylegan2-ada-pytorch}
[ -d "$REF_DIR" ] || REF_DIR=$ROOT/../shared/reference/stylegan2-ada-pytorch
OUT=${OUT:-$ROOT/out/gpu}
mkdir -p "$OUT"
REPORT=$OUT/gpu_report.txt
: > "$REPORT"
say() { echo "$*" | tee -a "$REPORT"; }
WORK=$(mktemp -d)
status=0

say "== device"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$REPORT"

say "== 1. golden parity on CUDA"
for net in tiny32 tiny64; do
  g=$ROOT/tests/golden
  "$BIN" import --g "$g/$net-G.safetensors" --d "$g/$net-D.safetensors" --kwargs "$g/$net-kwargs.json" \
    --out "$WORK/$net.safetensors" >/dev/null || { say "$net: import failed"; status=1; continue; }
  timeout 120 "$BIN" --device cuda generate --network "$WORK/$net.safetensors" --seeds 0,1,6600-6605 --trunc 1 \
    --noise-mode const --outdir "$WORK/$net" >/dev/null 2>&1 || { say "$net: generate failed"; status=1; continue; }
  "$PY" - "$g/$net-io.safetensors" "$WORK/$net" <<'PYEOF' 2>&1 | tee -a "$REPORT" || status=1
import json, sys, glob
import numpy as np
from PIL import Image
b = open(sys.argv[1], 'rb').read(); n = int.from_bytes(b[:8], 'little'); h = json.loads(b[8:8 + n])
v = h['uint8_const_psi1.0']; s, e = v['data_offsets']
ref = np.frombuffer(b[8 + n + s:8 + n + e], dtype=np.uint8).reshape(v['shape'])
seeds = [0, 1, 6600, 6601, 6602, 6603, 6604, 6605]
got = np.stack([np.asarray(Image.open(f"{sys.argv[2]}/seed{s:04d}.png").convert('RGB')) for s in seeds])
d = np.abs(got.astype(int) - ref.astype(int))
ok = d.max() <= 1 and (d > 0).mean() <= 0.001
print(f"{sys.argv[2].split('/')[-1]}: max |diff| {d.max()} levels, {(d > 0).mean():.5f} of values differ: {'ok' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PYEOF
done

say "== 2. fp16 training step (num_fp16_res 4, conv_clamp 256), must stay finite"
timeout 120 "$BIN" --device cuda bench train --config "$ROOT/configs/config-f.toml" --set model.resolution=64 \
  --set model.num_fp16_res=4 --set model.conv_clamp=256 --set training.nan_policy=stop --batch 16 --steps 16 \
  2>&1 | tee -a "$REPORT" || { say "fp16 step: FAIL"; status=1; }

say "== 3. sg2 bench train, config-f 256x256, batch 32"
timeout 150 "$BIN" --device cuda bench train --config "$ROOT/configs/config-f.toml" --set model.resolution=256 --batch 32 \
  --steps 32 2>&1 | tee -a "$REPORT" || { say "sg2 bench: FAIL (or over its time limit)"; status=1; }

say "== 4. reference training step on the same GPU (config-f 256x256, batch 32)"
if [ -d "$REF_DIR" ]; then
  timeout 240 "$PY" "$ROOT/scripts/ref_bench_cuda.py" "$REF_DIR" --res 256 --batch 32 --steps 32 2>&1 | tail -n 3 | tee -a "$REPORT" \
    || { say "reference bench: FAIL (or over its time limit)"; status=1; }
else
  say "skipped: no $REF_DIR (copy stylegan2-ada-pytorch into the repo and set REF_DIR)"
fi
say "== 5. data-parallel training on CUDA (NCCL)"
"$BIN" dataset-tool create_mnist --source /usr/share/datasets/fashion-mnist --dest "$WORK/fm" --resolution 32 \
  --max-images 512 >/dev/null 2>&1 || say "no Fashion-MNIST: step 5 uses nothing else"
if [ -d "$WORK/fm" ]; then
  small=(train --config "$ROOT/configs/fmnist32.toml" --data "$WORK/fm" --kimg 0.5 --set logging.tick_kimg=0.1)
  RANK=0 WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29517 SG2_DIST_BACKEND=nccl \
    timeout 90 "$BIN" --device cuda "${small[@]}" --outdir "$WORK/runs1" 2>&1 | tail -n 3 | tee -a "$REPORT" \
    || { say "NCCL group of one: FAIL"; status=1; }
  if [ "$(nvidia-smi -L | wc -l)" -ge 2 ]; then
    timeout 90 "$BIN" --device cuda "${small[@]}" --outdir "$WORK/runs2" --nproc-per-node 2 2>&1 | tail -n 3 | tee -a "$REPORT" \
      || { say "NCCL 2 processes: FAIL"; status=1; }
  else
    say "one GPU: --nproc-per-node 2 over NCCL skipped (NCCL needs one GPU per process)"
  fi
fi
rm -rf "$WORK"
say "== done (status $status)"
exit $status
