//! Fréchet Inception Distance (the official `frechet_inception_distance.py`): Inception features
//! (`return_features=True`) of reals and fakes, their means and covariances (normalised by N as the official
//! `FeatureStats`), then the Fréchet distance with the float64 square-root trace of [`super::linalg`].

use super::linalg::frechet_distance;
use super::stats::FeatureStats;
use anyhow::Result;

/// FID between two sets of statistics.
pub fn fid(real: &FeatureStats, gen: &FeatureStats) -> Result<f64> {
    let (mu_r, s_r) = real.mean_cov()?;
    let (mu_g, s_g) = gen.mean_cov()?;
    Ok(frechet_distance(&mu_g, &s_g, &mu_r, &s_r))
}
