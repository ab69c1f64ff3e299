//! Geometric augmentations: pixel blitting (xflip, rotate90, xint) and general transforms (scale, rotate, aniso,
//! xfrac), composed into one inverse 2-D transform per image and executed once as the official pipe does:
//! reflect-pad, 2x upsample with the sym6 low-pass, bilinear resampling, low-pass and 2x downsample.

use super::filter::{reflect_pad, upfirdn2d_sep, wavelet_filter, SYM6};
use super::{sampling, AugmentSpec, Draw};
use std::f64::consts::PI;
use tch::{Device, Kind, Tensor};

/// Per-sample 3x3 matrices from nine [B] float32 tensors, row-major (the official `matrix` helper).
fn matrix3(e: [&Tensor; 9]) -> Tensor {
    let b = e[0].size()[0];
    Tensor::stack(&e, -1).reshape([b, 3, 3])
}

fn translate2d(tx: &Tensor, ty: &Tensor) -> Tensor {
    let (o, z) = (tx.ones_like(), tx.zeros_like());
    matrix3([&o, &z, tx, &z, &o, ty, &z, &z, &o])
}

fn scale2d(sx: &Tensor, sy: &Tensor) -> Tensor {
    let (o, z) = (sx.ones_like(), sx.zeros_like());
    matrix3([sx, &z, &z, &z, sy, &z, &z, &z, &o])
}

fn rotate2d(theta: &Tensor) -> Tensor {
    let (o, z) = (theta.ones_like(), theta.zeros_like());
    let (c, s, ns) = (theta.cos(), theta.sin(), (-theta).sin());
    matrix3([&c, &ns, &z, &s, &c, &z, &z, &z, &o])
}

/// A constant 3x3 float32 matrix.
fn const3(rows: [[f64; 3]; 3], device: Device) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().map(|&v| v as f32).collect();
    Tensor::from_slice(&flat).reshape([3, 3]).to_device(device)
}

fn const_scale(sx: f64, sy: f64, device: Device) -> Tensor {
    const3([[sx, 0.0, 0.0], [0.0, sy, 0.0], [0.0, 0.0, 1.0]], device)
}

fn const_translate(tx: f64, ty: f64, device: Device) -> Tensor {
    const3([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], device)
}

/// Draws the geometric parameters in the official order and returns the inverse transform `G_inv` [B, 3, 3]
/// (output pixel -> input pixel, centred coordinates), or None when no geometric kind is on. Samples that skip
/// an augmentation still consume its draws.
pub(super) fn draw_transform(s: &AugmentSpec, d: &Draw, size: &[i64]) -> Option<Tensor> {
    if ![s.xflip, s.rotate90, s.xint, s.scale, s.rotate, s.aniso, s.xfrac].iter().any(|&m| m > 0.0) {
        return None;
    }
    let (b, h, w) = (size[0], size[2] as f64, size[3] as f64);
    let mut g = Tensor::eye(3, (Kind::Float, d.device));

    if s.xflip > 0.0 {
        let i = (d.rand(&[b]) * 2.0).floor();
        let i = i.where_self(&d.coin(&[b], d.prob(s.xflip)), &i.zeros_like());
        let sx = (&i * -2.0 + 1.0).reciprocal();
        g = g.matmul(&scale2d(&sx, &sx.ones_like()));
    }
    if s.rotate90 > 0.0 {
        let i = (d.rand(&[b]) * 4.0).floor();
        let i = i.where_self(&d.coin(&[b], d.prob(s.rotate90)), &i.zeros_like());
        let theta = &i * (-PI / 2.0);
        g = g.matmul(&rotate2d(&(-theta)));
    }
    if s.xint > 0.0 {
        let t = (d.rand(&[b, 2]) * 2.0 - 1.0) * s.xint_max;
        let t = t.where_self(&d.coin(&[b, 1], d.prob(s.xint)), &t.zeros_like());
        let tx = (t.select(1, 0) * w).round();
        let ty = (t.select(1, 1) * h).round();
        g = g.matmul(&translate2d(&(-tx), &(-ty)));
    }
    if s.scale > 0.0 {
        let k = (d.randn(&[b]) * s.scale_std).exp2();
        let k = k.where_self(&d.coin(&[b], d.prob(s.scale)), &k.ones_like());
        let inv = k.reciprocal();
        g = g.matmul(&scale2d(&inv, &inv));
    }
    // Pre- and post-rotation each with p_rot, so that P(pre or post) = rotate * p.
    let p_rot = 1.0f32 - (1.0f32 - d.prob(s.rotate)).clamp(0.0, 1.0).sqrt();
    let rotation = |d: &Draw| {
        let theta = (d.rand(&[b]) * 2.0 - 1.0) * PI * s.rotate_max;
        let theta = theta.where_self(&d.coin(&[b], p_rot), &theta.zeros_like());
        rotate2d(&theta)
    };
    if s.rotate > 0.0 {
        g = g.matmul(&rotation(d));
    }
    if s.aniso > 0.0 {
        let k = (d.randn(&[b]) * s.aniso_std).exp2();
        let k = k.where_self(&d.coin(&[b], d.prob(s.aniso)), &k.ones_like());
        let inv = k.reciprocal();
        g = g.matmul(&scale2d(&inv, &inv.reciprocal()));
    }
    if s.rotate > 0.0 {
        g = g.matmul(&rotation(d));
    }
    if s.xfrac > 0.0 {
        let t = d.randn(&[b, 2]) * s.xfrac_std;
        let t = t.where_self(&d.coin(&[b, 1], d.prob(s.xfrac)), &t.zeros_like());
        let tx = t.select(1, 0) * w;
        let ty = t.select(1, 1) * h;
        g = g.matmul(&translate2d(&(-tx), &(-ty)));
    }
    Some(g)
}

/// Executes `G_inv` on NCHW images. The padding is just wide enough that the transformed image, plus the
/// low-pass filter's support, only reads reflected content.
pub(super) fn apply(x: &Tensor, g_inv: &Tensor) -> Tensor {
    let (b, c, h, w) = x.size4().expect("NCHW");
    let dev = x.device();
    let hz = wavelet_filter(&SYM6, dev);
    let hz_pad = hz.size()[0] / 4;
    let (cx, cy) = ((w - 1) as f64 / 2.0, (h - 1) as f64 / 2.0);
    let f32s = |v: &[f64]| Tensor::from_slice(&v.iter().map(|&x| x as f32).collect::<Vec<_>>()).to_device(dev);

    // Where the corners of the output land in the input: the margin each side needs.
    let corners = f32s(&[-cx, -cy, 1.0, cx, -cy, 1.0, cx, cy, 1.0, -cx, cy, 1.0]).reshape([4, 3]);
    let cp = g_inv.matmul(&corners.tr());
    let m = cp.narrow(1, 0, 2).permute([1, 0, 2]).flatten(1, -1);
    let m = Tensor::cat(&[-&m, m.shallow_clone()], 0).amax(1, false);
    let pad2 = (hz_pad * 2) as f64;
    let m = m + f32s(&[pad2 - cx, pad2 - cy, pad2 - cx, pad2 - cy]);
    let m =
        m.maximum(&f32s(&[0.0; 4])).minimum(&f32s(&[(w - 1) as f64, (h - 1) as f64, (w - 1) as f64, (h - 1) as f64]));
    let m = Vec::<i64>::try_from(m.ceil().to_kind(Kind::Int64).to_device(Device::Cpu)).expect("margins");
    let (mx0, my0, mx1, my1) = (m[0], m[1], m[2], m[3]);

    let x = reflect_pad(x, [mx0, mx1, my0, my1]);
    let g = const_translate((mx0 - mx1) as f64 / 2.0, (my0 - my1) as f64 / 2.0, dev).matmul(g_inv);

    // 2x upsampling (upfirdn2d.upsample2d).
    let taps = hz.size()[0];
    let x = upfirdn2d_sep(&x, &hz, 2, 1, [(taps + 1) / 2, (taps - 2) / 2, (taps + 1) / 2, (taps - 2) / 2], false, 4.0);
    let g = const_scale(2.0, 2.0, dev).matmul(&g).matmul(&const_scale(0.5, 0.5, dev));
    let g = const_translate(-0.5, -0.5, dev).matmul(&g).matmul(&const_translate(0.5, 0.5, dev));

    // Resample onto the output grid (2x the padded output size), in grid_sample's normalized coordinates.
    let (ho, wo) = ((h + hz_pad * 2) * 2, (w + hz_pad * 2) * 2);
    let (hi, wi) = (x.size()[2], x.size()[3]);
    let g = const_scale(2.0 / wi as f64, 2.0 / hi as f64, dev).matmul(&g).matmul(&const_scale(
        1.0 / (2.0 / wo as f64),
        1.0 / (2.0 / ho as f64),
        dev,
    ));
    let grid = Tensor::affine_grid_generator(&g.narrow(1, 0, 2), [b, c, ho, wo], false);
    let x = sampling::bilinear(&x, &grid);

    // Low-pass, 2x downsampling and crop (upfirdn2d.downsample2d with padding -2 * hz_pad, flip_filter).
    let p = -hz_pad * 2;
    let pad = [p + (taps - 1) / 2, p + (taps - 2) / 2, p + (taps - 1) / 2, p + (taps - 2) / 2];
    upfirdn2d_sep(&x, &hz, 1, 2, pad, true, 1.0)
}
