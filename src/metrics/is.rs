//! Inception Score (the official `inception_score.py`): class probabilities of generated images from the Inception
//! detector without its output bias (`no_output_bias=True`), split into `num_splits` parts; per part
//! `exp(mean_i KL(p_i || mean p))`; the score is the mean over parts (and their standard deviation).

use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

/// (mean, std) of the per-split scores for probabilities [N, classes]. Part `i` holds rows
/// `i * N / splits .. (i + 1) * N / splits`. A zero probability contributes 0 (the limit of p log p).
pub fn inception_score(probs: &Tensor, num_splits: usize) -> Result<(f64, f64)> {
    let n = probs.size()[0] as usize;
    ensure!(num_splits >= 1 && n >= num_splits, "IS needs at least {num_splits} images, got {n}");
    let p = probs.to_kind(Kind::Double);
    let mut scores = vec![];
    for i in 0..num_splits {
        let (lo, hi) = (i * n / num_splits, (i + 1) * n / num_splits);
        let part = p.narrow(0, lo as i64, (hi - lo) as i64);
        let py = part.mean_dim([0i64].as_slice(), true, Kind::Double);
        let kl = part.xlogy(&part) - part.xlogy(&py);
        let kl = kl.sum_dim_intlist([1i64].as_slice(), false, Kind::Double).mean(Kind::Double).double_value(&[]);
        scores.push(kl.exp());
    }
    let mean = scores.iter().sum::<f64>() / scores.len() as f64;
    let var = scores.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / scores.len() as f64;
    Ok((mean, var.sqrt()))
}
