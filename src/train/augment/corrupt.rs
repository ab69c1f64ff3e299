//! Image-space corruptions: additive Gaussian noise and cutout.

use super::{AugmentSpec, Draw};
use tch::{Kind, Tensor};

/// Adds N(0, sigma^2) per pixel, sigma = |N(0, noise_std^2)| per image.
pub(super) fn noise(x: &Tensor, s: &AugmentSpec, d: &Draw) -> Tensor {
    let (b, c, h, w) = x.size4().expect("NCHW");
    let sigma = d.randn(&[b, 1, 1, 1]).abs() * s.noise_std;
    let sigma = sigma.where_self(&d.coin(&[b, 1, 1, 1], d.prob(s.noise)), &sigma.zeros_like());
    x + (d.randn(&[b, c, h, w]) * sigma).to_kind(x.kind())
}

/// Zeroes a square of side `cutout_size` (relative) at a uniform random centre, per image.
pub(super) fn cutout(x: &Tensor, s: &AugmentSpec, d: &Draw) -> Tensor {
    let (b, _, h, w) = x.size4().expect("NCHW");
    let fo = (Kind::Float, d.device);
    let size = Tensor::full([b, 2, 1, 1, 1], s.cutout_size, fo);
    let size = size.where_self(&d.coin(&[b, 1, 1, 1, 1], d.prob(s.cutout)), &size.zeros_like());
    let center = d.rand(&[b, 2, 1, 1, 1]);
    let coord_x = Tensor::arange(w, fo).reshape([1, 1, 1, -1]);
    let coord_y = Tensor::arange(h, fo).reshape([1, 1, -1, 1]);
    let outside = |coord: Tensor, extent: i64, axis: i64| {
        ((coord + 0.5) / extent as f64 - center.select(1, axis)).abs().ge_tensor(&(size.select(1, axis) / 2.0))
    };
    let mask = outside(coord_x, w, 0).logical_or(&outside(coord_y, h, 1));
    x * mask.to_kind(x.kind())
}
