//! Colour augmentations (brightness, contrast, luma flip, hue, saturation) as one affine 4x4 transform per image
//! in homogeneous RGB; 1-channel images get the transform averaged over the colour rows, and skip hue and
//! saturation, as in the official pipe.

use super::{AugmentSpec, Draw};
use std::f64::consts::PI;
use tch::{Kind, Tensor};

/// Per-sample 4x4 matrices from sixteen [B] float32 tensors, row-major.
fn matrix4(e: [&Tensor; 16]) -> Tensor {
    let b = e[0].size()[0];
    Tensor::stack(&e, -1).reshape([b, 4, 4])
}

fn translate3d(t: &Tensor) -> Tensor {
    let (o, z) = (t.ones_like(), t.zeros_like());
    matrix4([&o, &z, &z, t, &z, &o, &z, t, &z, &z, &o, t, &z, &z, &z, &o])
}

fn scale3d(s: &Tensor) -> Tensor {
    let (o, z) = (s.ones_like(), s.zeros_like());
    matrix4([s, &z, &z, &z, &z, s, &z, &z, &z, &z, s, &z, &z, &z, &z, &o])
}

/// Rotation by `theta` [B] around the unit axis (v, v, v) (Rodrigues' formula).
fn rotate_luma(v: f32, theta: &Tensor) -> Tensor {
    let (s, c) = (theta.sin(), theta.cos());
    let cc = 1.0 - &c;
    let vv = (v * v) as f64;
    let diag = &cc * vv + &c;
    let minus = &cc * vv - &s * v as f64;
    let plus = &cc * vv + &s * v as f64;
    let (o, z) = (theta.ones_like(), theta.zeros_like());
    // With vx = vy = vz every off-diagonal entry is vv*cc -/+ v*s.
    matrix4([&diag, &minus, &plus, &z, &plus, &diag, &minus, &z, &minus, &plus, &diag, &z, &z, &z, &z, &o])
}

/// Draws the colour parameters in the official order; None when no colour kind applies to `channels`.
pub(super) fn draw_transform(s: &AugmentSpec, d: &Draw, b: i64, channels: i64) -> Option<Tensor> {
    let rgb = channels > 1;
    if !(s.brightness > 0.0 || s.contrast > 0.0 || s.lumaflip > 0.0 || rgb && (s.hue > 0.0 || s.saturation > 0.0)) {
        return None;
    }
    let fo = (Kind::Float, d.device);
    let eye = Tensor::eye(4, fo);
    let mut m = eye.shallow_clone();
    if s.brightness > 0.0 {
        let t = d.randn(&[b]) * s.brightness_std;
        let t = t.where_self(&d.coin(&[b], d.prob(s.brightness)), &t.zeros_like());
        m = translate3d(&t).matmul(&m);
    }
    if s.contrast > 0.0 {
        let k = (d.randn(&[b]) * s.contrast_std).exp2();
        let k = k.where_self(&d.coin(&[b], d.prob(s.contrast)), &k.ones_like());
        m = scale3d(&k).matmul(&m);
    }
    // The luma axis (1, 1, 1, 0) / sqrt(3), formed in float64 and stored as float32 like the official constant.
    let v = (1.0 / 3f64.sqrt()) as f32;
    let axis = Tensor::from_slice(&[v, v, v, 0.0]).to_device(d.device);
    let vvt = axis.outer(&axis);
    if s.lumaflip > 0.0 {
        let i = (d.rand(&[b, 1, 1]) * 2.0).floor();
        let i = i.where_self(&d.coin(&[b, 1, 1], d.prob(s.lumaflip)), &i.zeros_like());
        // Householder reflection through the plane orthogonal to the luma axis.
        m = (&eye - &vvt * 2.0 * i).matmul(&m);
    }
    if rgb && s.hue > 0.0 {
        let theta = (d.rand(&[b]) * 2.0 - 1.0) * PI * s.hue_max;
        let theta = theta.where_self(&d.coin(&[b], d.prob(s.hue)), &theta.zeros_like());
        m = rotate_luma(v, &theta).matmul(&m);
    }
    if rgb && s.saturation > 0.0 {
        let k = (d.randn(&[b, 1, 1]) * s.saturation_std).exp2();
        let k = k.where_self(&d.coin(&[b, 1, 1], d.prob(s.saturation)), &k.ones_like());
        m = (&vvt + (&eye - &vvt) * k).matmul(&m);
    }
    Some(m)
}

/// Applies the per-sample colour matrices [B, 4, 4] to NCHW images with 1 or 3 channels.
pub(super) fn apply(x: &Tensor, m: &Tensor) -> Tensor {
    let (b, c, h, w) = x.size4().expect("NCHW");
    let m = m.to_kind(x.kind());
    let flat = x.reshape([b, c, h * w]);
    let rows = m.narrow(1, 0, 3);
    let y = match c {
        3 => rows.narrow(2, 0, 3).matmul(&flat) + rows.narrow(2, 3, 1),
        1 => {
            let mean = rows.mean_dim(1, true, x.kind());
            flat * mean.narrow(2, 0, 3).sum_dim_intlist(2, true, x.kind()) + mean.narrow(2, 3, 1)
        }
        _ => panic!("AugmentPipe: colour augmentation needs 1 or 3 channels, got {c}"),
    };
    y.reshape([b, c, h, w])
}
