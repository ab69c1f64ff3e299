//! Kernel Inception Distance (the official `kernel_inception_distance.py`): the unbiased MMD estimate with the
//! polynomial kernel `k(x, y) = (x.y / d + 1)^3`, averaged over `num_subsets` random subsets of
//! `m = min(n_real, n_gen, max_subset_size)` rows drawn without replacement.
//!
//! Subsets are drawn as `np.random.RandomState(seed).choice(n, m, replace=False)` (fakes, then reals, per subset),
//! so a Python run with `np.random.seed(seed)` picks the same rows. Sums run in float64.

use crate::rng::RandomState;
use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

/// numpy's legacy `random_interval(max)`: a uniform integer in `0..=max` by masked rejection.
fn random_interval(rs: &mut RandomState, max: u32) -> u32 {
    if max == 0 {
        return 0;
    }
    let mut mask = max;
    for s in [1, 2, 4, 8, 16] {
        mask |= mask >> s;
    }
    loop {
        let v = rs.next_u32() & mask;
        if v <= max {
            return v;
        }
    }
}

/// numpy's legacy `RandomState.permutation(n)` (Fisher-Yates from the end).
pub fn permutation(rs: &mut RandomState, n: usize) -> Vec<i64> {
    let mut v: Vec<i64> = (0..n as i64).collect();
    for i in (1..n).rev() {
        let j = random_interval(rs, i as u32) as usize;
        v.swap(i, j);
    }
    v
}

/// `RandomState.choice(n, m, replace=False)`: the first `m` of a permutation.
pub fn choice(rs: &mut RandomState, n: usize, m: usize) -> Vec<i64> {
    let mut p = permutation(rs, n);
    p.truncate(m);
    p
}

/// KID between real and generated features ([N, d] each).
pub fn kid(real: &Tensor, gen: &Tensor, num_subsets: usize, max_subset_size: usize, seed: u32) -> Result<f64> {
    let (nr, ng) = (real.size()[0] as usize, gen.size()[0] as usize);
    let m = nr.min(ng).min(max_subset_size);
    ensure!(m >= 2, "KID needs at least 2 real and 2 generated images (got {nr} and {ng})");
    let d = real.size()[1] as f64;
    let real = real.to_kind(Kind::Double);
    let gen = gen.to_kind(Kind::Double);
    let dev = real.device();
    let mut rs = RandomState::new(seed);
    let kernel = |a: &Tensor, b: &Tensor| (a.matmul(&b.tr()) / d + 1.0).pow_tensor_scalar(3);
    let mut t = 0.0;
    for _ in 0..num_subsets {
        let xi = Tensor::from_slice(&choice(&mut rs, ng, m)).to_device(dev);
        let yi = Tensor::from_slice(&choice(&mut rs, nr, m)).to_device(dev);
        let x = gen.index_select(0, &xi);
        let y = real.index_select(0, &yi);
        let a = kernel(&x, &x) + kernel(&y, &y);
        let b = kernel(&x, &y);
        let a_sum = a.sum(Kind::Double).double_value(&[]);
        let a_diag = a.diagonal(0, 0, 1).sum(Kind::Double).double_value(&[]);
        let b_sum = b.sum(Kind::Double).double_value(&[]);
        t += (a_sum - a_diag) / (m as f64 - 1.0) - b_sum * 2.0 / m as f64;
    }
    Ok(t / num_subsets as f64 / m as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_numpys() {
        // np.random.RandomState(0).permutation(10)
        let p = permutation(&mut RandomState::new(0), 10);
        assert_eq!(p, [2, 8, 4, 9, 1, 6, 7, 3, 0, 5]);
    }
}
