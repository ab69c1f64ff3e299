//! Precision and recall (the official `precision_recall.py`, Kynkäänniemi et al. 2019): VGG16 features
//! (`return_features=True`); each manifold point's radius is the distance to its k-th nearest neighbour in its own
//! set (itself excluded: the (k+1)-th smallest distance); precision is the fraction of fakes inside some real
//! radius, recall the fraction of reals inside some fake radius.
//!
//! As the official, features, distances and radii are rounded to float16; distances are computed in float32 in
//! batches of `row_batch` x `col_batch`, so memory stays bounded for 200k reals.

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

fn half(t: &Tensor) -> Tensor {
    t.to_kind(Kind::Half).to_kind(Kind::Float)
}

/// Distances [rows, cols] between `rows` and every row of `cols`, column batch by column batch, float16-rounded.
fn distances(rows: &Tensor, cols: &Tensor, col_batch: i64) -> Tensor {
    let parts: Vec<Tensor> =
        cols.split(col_batch, 0).iter().map(|c| half(&Tensor::cdist(rows, c, 2.0, None::<i64>))).collect();
    Tensor::cat(&parts, 1)
}

/// Radius of each manifold point: distance to its `k`-th nearest other point.
pub fn radii(manifold: &Tensor, k: i64, row_batch: i64, col_batch: i64) -> Tensor {
    let parts: Vec<Tensor> = manifold
        .split(row_batch, 0)
        .iter()
        .map(|rows| half(&distances(rows, manifold, col_batch).kthvalue(k + 1, 1, false).0))
        .collect();
    Tensor::cat(&parts, 0)
}

/// Per probe: the smallest `distance / radius` over the manifold is <= 1, i.e. inside some point's ball.
pub fn inside(manifold: &Tensor, radii: &Tensor, probes: &Tensor, row_batch: i64, col_batch: i64) -> Tensor {
    let parts: Vec<Tensor> = probes
        .split(row_batch, 0)
        .iter()
        .map(|rows| distances(rows, manifold, col_batch).le_tensor(&radii.unsqueeze(0)).any_dim(1, false))
        .collect();
    Tensor::cat(&parts, 0)
}

/// (precision, recall) with neighbourhood size `k`.
pub fn precision_recall(real: &Tensor, gen: &Tensor, k: i64, row_batch: i64, col_batch: i64) -> Result<(f64, f64)> {
    let (nr, ng) = (real.size()[0], gen.size()[0]);
    ensure!(nr > k && ng > k, "precision/recall with k={k} needs more than {k} real and generated images");
    let real = half(real);
    let gen = half(gen);
    let frac = |manifold: &Tensor, probes: &Tensor| {
        let r = radii(manifold, k, row_batch, col_batch);
        inside(manifold, &r, probes, row_batch, col_batch).to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
    };
    Ok((frac(&real, &gen), frac(&gen, &real)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_points() {
        // Reals on a line at 0, 1, 2, 3, 10: with k=1 the radii are 1, 1, 1, 1, 7.
        let real = Tensor::from_slice(&[0.0f32, 1.0, 2.0, 3.0, 10.0]).reshape([5, 1]);
        let r = radii(&real, 1, 2, 3);
        assert_eq!(Vec::<f32>::try_from(&r).unwrap(), [1.0, 1.0, 1.0, 1.0, 7.0]);
        // Fakes at 0.5 (inside), 4 (inside: |4-3| = 1 <= 1), 5.5 (inside 10's radius 7: 4.5), 20 (outside, 10 away).
        let gen = Tensor::from_slice(&[0.5f32, 4.0, 5.5, 20.0]).reshape([4, 1]);
        let ins = inside(&real, &r, &gen, 3, 2);
        assert_eq!(Vec::<bool>::try_from(&ins).unwrap(), [true, true, true, false]);
    }
}
