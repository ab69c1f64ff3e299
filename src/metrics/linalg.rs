//! FID's matrix square-root trace in float64.
//!
//! The official FID is `|mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 S2))` with `scipy.linalg.sqrtm`. For symmetric PSD
//! `S1`, `S2`, `S1 S2` is similar to `A = sqrt(S1) S2 sqrt(S1)` (symmetric PSD), so `tr sqrtm(S1 S2)` is the sum of
//! the square roots of `A`'s eigenvalues. Two symmetric eigen-decompositions are stable for the singular 2048x2048
//! covariances of small sets, where a general `sqrtm` can go complex; rounding's tiny negative eigenvalues are
//! clamped to 0.

use tch::{Kind, Tensor};

/// Eigenvalues at rounding level (below `n * eps * max`) are zeros that rounding moved; their square roots
/// (~1e-8 x scale) would otherwise add noise to the trace.
fn clean(vals: &Tensor) -> Tensor {
    let n = vals.size()[0] as f64;
    let max = vals.abs().max().double_value(&[]);
    let tol = n * f64::EPSILON * max;
    vals.where_self(&vals.gt(tol), &vals.zeros_like())
}

/// `tr sqrtm(S1 S2)` for symmetric PSD `S1`, `S2` (float64).
///
/// With `S1 = V diag(l) V^T` restricted to its r non-zero eigenvalues, the non-zero eigenvalues of
/// `sqrt(S1) S2 sqrt(S1)` are those of the r x r matrix `diag(sqrt l) V^T S2 V diag(sqrt l)`: small sets
/// (r = N - 1 < 2048) need one full decomposition instead of two.
pub fn trace_sqrt_product(s1: &Tensor, s2: &Tensor) -> f64 {
    let s1 = s1.to_kind(Kind::Double);
    let s1 = (&s1 + s1.transpose(0, 1)) * 0.5;
    let (vals, vecs) = s1.linalg_eigh("L");
    let vals = clean(&vals);
    let keep = vals.gt(0.0).nonzero().squeeze_dim(1);
    if keep.size()[0] == 0 {
        return 0.0;
    }
    let r = vals.index_select(0, &keep).sqrt();
    let v = vecs.index_select(1, &keep) * r.unsqueeze(0);
    let c = v.transpose(0, 1).matmul(&s2.to_kind(Kind::Double)).matmul(&v);
    let c = (&c + c.transpose(0, 1)) * 0.5;
    clean(&c.linalg_eigvalsh("L")).sqrt().sum(Kind::Double).double_value(&[])
}

/// The Fréchet distance between N(mu1, s1) and N(mu2, s2).
pub fn frechet_distance(mu1: &Tensor, s1: &Tensor, mu2: &Tensor, s2: &Tensor) -> f64 {
    let d = mu1.to_kind(Kind::Double) - mu2.to_kind(Kind::Double);
    let m = d.dot(&d).double_value(&[]);
    let tr = s1.to_kind(Kind::Double).trace().double_value(&[]) + s2.to_kind(Kind::Double).trace().double_value(&[]);
    m + tr - 2.0 * trace_sqrt_product(s1, s2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diagonal_covariances_have_the_closed_form() {
        // Diagonal: tr sqrt(S1 S2) = sum sqrt(a_i b_i).
        let a = [1.0f64, 4.0, 9.0, 0.0];
        let b = [4.0f64, 1.0, 16.0, 5.0];
        let s1 = Tensor::from_slice(&a).diag(0);
        let s2 = Tensor::from_slice(&b).diag(0);
        let expect: f64 = a.iter().zip(&b).map(|(x, y)| (x * y).sqrt()).sum();
        assert!((trace_sqrt_product(&s1, &s2) - expect).abs() < 1e-12);
        // Identical distributions: distance 0.
        let mu = Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0]);
        assert!(frechet_distance(&mu, &s2, &mu, &s2).abs() < 1e-12);
    }

    #[test]
    fn rotated_covariances_match_the_scalar_formula() {
        // S1 = R diag(a) R^T, S2 = R diag(b) R^T share eigenvectors, so the trace is still sum sqrt(a_i b_i).
        let q = Tensor::linalg_qr(&Tensor::randn([6, 6], (Kind::Double, tch::Device::Cpu)), "reduced").0;
        let a = Tensor::from_slice(&[3.0f64, 2.0, 1.0, 0.5, 0.0, 0.0]);
        let b = Tensor::from_slice(&[1.0f64, 5.0, 2.0, 0.0, 7.0, 0.0]);
        let s1 = (&q * a.unsqueeze(0)).matmul(&q.tr());
        let s2 = (&q * b.unsqueeze(0)).matmul(&q.tr());
        let expect = (a * b).sqrt().sum(Kind::Double).double_value(&[]);
        assert!((trace_sqrt_product(&s1, &s2) - expect).abs() < 1e-9);
    }
}
