"""The reference's training throughput on CUDA: stylegan2-ada-pytorch's networks (config-f: channel_base 32768,
channel_max 512, 8 mapping layers) + StyleGAN2Loss, the four lazy phases and Adam as its training_loop.py runs them,
random reals, TF32 off as its training sets it; one warm-up minibatch, then STEPS timed ones. Prints sec/kimg,
images/s and peak GPU memory.
usage: python ref_bench_cuda.py REF_DIR [--res 256] [--batch 32] [--steps 32]"""
import argparse, sys, time

p = argparse.ArgumentParser()
p.add_argument('ref'); p.add_argument('--res', type=int, default=256); p.add_argument('--batch', type=int, default=32)
p.add_argument('--steps', type=int, default=32)
a = p.parse_args()
sys.path.insert(0, a.ref)
import torch
from training.networks import Generator, Discriminator
from training.loss import StyleGAN2Loss
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
dev = torch.device('cuda')
torch.manual_seed(0)
common = dict(c_dim=0, img_resolution=a.res, img_channels=3)
G = Generator(z_dim=512, w_dim=512, **common, mapping_kwargs=dict(num_layers=8),
              synthesis_kwargs=dict(channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None)).train().to(dev)
D = Discriminator(**common, channel_base=32768, channel_max=512, num_fp16_res=0, conv_clamp=None,
                  epilogue_kwargs=dict(mbstd_group_size=4)).train().to(dev)
loss = StyleGAN2Loss(dev, G.mapping, G.synthesis, D, r1_gamma=10, style_mixing_prob=0.9, pl_weight=2)
phases = []
for name, mod, reg in [('G', G, 4), ('D', D, 16)]:
    r = reg / (reg + 1)
    opt = torch.optim.Adam(mod.parameters(), lr=0.002 * r, betas=(0 ** r, 0.99 ** r), eps=1e-8)
    phases += [(name + 'main', mod, opt, 1), (name + 'reg', mod, opt, reg)]
B = a.batch

def step(i):
    real = torch.randint(0, 256, [B, 3, a.res, a.res], device=dev).float() / 127.5 - 1
    c = torch.zeros([B, 0], device=dev)
    for name, mod, opt, interval in phases:
        if i % interval:
            continue
        opt.zero_grad(set_to_none=True); mod.requires_grad_(True)
        z = torch.randn([B, 512], device=dev)
        loss.accumulate_gradients(phase=name, real_img=real, real_c=c, gen_z=z, gen_c=c, sync=True, gain=interval)
        mod.requires_grad_(False)
        for prm in mod.parameters():
            if prm.grad is not None:
                torch.nan_to_num(prm.grad, nan=0, posinf=1e5, neginf=-1e5, out=prm.grad)
        opt.step()

step(0)
torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
t0 = time.time()
for i in range(1, a.steps + 1):
    step(i)
torch.cuda.synchronize()
dt = time.time() - t0
print(f"reference: sec/kimg {dt / (a.steps * B) * 1000:.2f}  images/s {a.steps * B / dt:.1f}  "
      f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
