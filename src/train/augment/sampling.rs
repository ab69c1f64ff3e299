//! Bilinear resampling with zero padding and `align_corners=False` (`grid_sample`'s defaults, which the official
//! pipe uses), written as four gathers with fixed weights. libtorch's `grid_sample` has no double backward; here
//! the output is linear in the image with weights that depend only on the grid, and gather, its backward
//! (scatter-add) and that one's backward (gather again) are all differentiable, so R1 can go through it.

use tch::{Kind, Tensor};

/// Samples NCHW `x` at `grid` [N, Ho, Wo, 2] (x, y in [-1, 1] across the image's outer pixel edges).
pub(super) fn bilinear(x: &Tensor, grid: &Tensor) -> Tensor {
    let (b, c, hi, wi) = x.size4().expect("NCHW");
    let (ho, wo) = (grid.size()[1], grid.size()[2]);
    let n = ho * wo;
    let grid = grid.detach().to_kind(Kind::Float);
    // Unnormalize as grid_sample does for align_corners=False.
    let ix = ((grid.select(3, 0) + 1.0) * wi as f64 - 1.0) / 2.0;
    let iy = ((grid.select(3, 1) + 1.0) * hi as f64 - 1.0) / 2.0;
    let (x0, y0) = (ix.floor(), iy.floor());
    let (x1, y1) = (&x0 + 1.0, &y0 + 1.0);
    let xs = [(&x0, &x1 - &ix), (&x1, &ix - &x0)];
    let ys = [(&y0, &y1 - &iy), (&y1, &iy - &y0)];
    let flat = x.reshape([b, c, hi * wi]);
    let mut out: Option<Tensor> = None;
    for (yy, wy) in &ys {
        for (xx, wx) in &xs {
            // Neighbours outside the image contribute zero.
            let inside = xx
                .ge(0.0)
                .logical_and(&xx.le((wi - 1) as f64))
                .logical_and(&yy.ge(0.0))
                .logical_and(&yy.le((hi - 1) as f64));
            let weight = (wx * wy * inside.to_kind(Kind::Float)).to_kind(x.kind()).reshape([b, 1, n]);
            let col = xx.clamp(0.0, (wi - 1) as f64).to_kind(Kind::Int64);
            let row = yy.clamp(0.0, (hi - 1) as f64).to_kind(Kind::Int64);
            let index = (row * wi + col).reshape([b, 1, n]).expand([b, c, n], false);
            let term = flat.gather(2, &index, false) * weight;
            out = Some(match out {
                None => term,
                Some(acc) => acc + term,
            });
        }
    }
    out.expect("four neighbours").reshape([b, c, ho, wo])
}
