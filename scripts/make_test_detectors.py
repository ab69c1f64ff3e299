#!/usr/bin/env python3
"""Builds small TorchScript stand-ins for the official metric detectors, for tests and benchmarks.

    python3 scripts/make_test_detectors.py OUTDIR [--seed N]

writes OUTDIR/inception-2015-12-05.pt and OUTDIR/vgg16.pt. They have the official call signatures and output shapes
and random weights, so every code path of `sg2 metrics` runs, but their numbers mean nothing:

- inception: forward(img, return_features=False, use_fp16=False, no_output_bias=False); uint8/float NCHW RGB in
  0..255; features [N, 2048] (non-negative, as the official pool3 features), else softmax probabilities [N, 1008]
  (without the output bias when no_output_bias). The official resizes to 299x299 inside; this one to 32x32.
- vgg16: forward(img, resize_images=True, return_lpips=False, return_features=False); features [N, 4096],
  return_lpips: the LPIPS embedding [N, D] (channel-normalised activations of three stages scaled by
  sqrt(weight / (H*W)), so the summed squared difference of two embeddings is their LPIPS distance), else softmax
  probabilities [N, 1000]. resize_images resizes to 64x64 (the official: 224x224).
Their weights do not require gradients, as in the official files: the official projector computes the target's
features with autograd on and backpropagates through them every step, which works only then.
"""
import argparse
import os

import torch
import torch.nn.functional as F


class InceptionV3(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.proj = torch.nn.Linear(32 * 4 * 4, 2048)
        self.output = torch.nn.Linear(2048, 1008)

    def forward(self, img, return_features: bool = False, use_fp16: bool = False, no_output_bias: bool = False):
        batch_size, channels, height, width = img.shape
        assert channels == 3
        x = img.to(torch.float32)
        x = F.interpolate(x, size=[32, 32], mode="bilinear", align_corners=False)
        x = (x - 128) / 128
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.adaptive_avg_pool2d(x, 4).reshape(batch_size, 32 * 4 * 4)
        features = F.relu(self.proj(x))
        if return_features:
            return features
        if no_output_bias:
            logits = F.linear(features, self.output.weight)
        else:
            logits = self.output(features)
        return F.softmax(logits, dim=1)


def lpips_part(f, w):
    n, c, h, wd = f.shape
    f = f / (f.square().sum(dim=1, keepdim=True) + 1e-10).sqrt()
    f = f * (w.reshape(1, c, 1, 1) / (h * wd)).sqrt()
    return f.reshape(n, c * h * wd)


class VGG16(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(8, 16, 3, padding=1)
        self.conv3 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = torch.nn.Linear(32 * 4 * 4, 4096)
        self.fc2 = torch.nn.Linear(4096, 1000)
        self.register_buffer("lpips0", torch.rand(8) + 0.1)
        self.register_buffer("lpips1", torch.rand(16) + 0.1)
        self.register_buffer("lpips2", torch.rand(32) + 0.1)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1))

    def forward(self, img, resize_images: bool = True, return_lpips: bool = False, return_features: bool = False):
        batch_size, channels, height, width = img.shape
        assert channels == 3
        x = img.to(torch.float32)
        if resize_images:
            x = F.interpolate(x, size=[64, 64], mode="area")
        x = (x / 255 - self.mean) / self.std
        f1 = F.relu(self.conv1(x))
        f2 = F.relu(self.conv2(F.max_pool2d(f1, 2)))
        f3 = F.relu(self.conv3(F.max_pool2d(f2, 2)))
        if return_lpips:
            return torch.cat(
                [lpips_part(f1, self.lpips0), lpips_part(f2, self.lpips1), lpips_part(f3, self.lpips2)], dim=1
            )
        pooled = F.adaptive_avg_pool2d(f3, 4).reshape(batch_size, 32 * 4 * 4)
        features = F.relu(self.fc1(pooled))
        if return_features:
            return features
        return F.softmax(self.fc2(features), dim=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("outdir")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    os.makedirs(a.outdir, exist_ok=True)
    torch.manual_seed(a.seed)
    for name, net in [("inception-2015-12-05.pt", InceptionV3()), ("vgg16.pt", VGG16())]:
        m = torch.jit.script(net.eval().requires_grad_(False))
        tmp = os.path.join(a.outdir, "." + name + ".tmp")
        torch.jit.save(m, tmp)
        os.replace(tmp, os.path.join(a.outdir, name))


if __name__ == "__main__":
    main()
