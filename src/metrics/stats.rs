//! Feature statistics (the official `FeatureStats`) and the cache of real-image statistics.
//!
//! The cache lives in `$SG2_HOME/cache`; a file is named by the dataset fingerprint, the detector's name and a hash
//! of everything that decides the numbers (dataset fingerprint, detector file hash, count, level, detector
//! arguments, what is captured). A changed dataset has another fingerprint, so its old statistics are never used.

use crate::model::checkpoint::{read_safetensors, write_safetensors};
use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// What to keep of the features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capture {
    /// Running float64 sums for the mean and covariance (FID).
    MeanCov,
    /// Every feature vector, float32 (KID, precision/recall, IS, ranking).
    All,
}

/// Features of `num_items` images: the sums or all rows, as the official `FeatureStats` keeps them.
pub struct FeatureStats {
    pub capture: Capture,
    pub max_items: usize,
    pub num_items: usize,
    raw_mean: Option<Tensor>,
    raw_cov: Option<Tensor>,
    all: Vec<Tensor>,
}

impl FeatureStats {
    pub fn new(capture: Capture, max_items: usize) -> FeatureStats {
        FeatureStats { capture, max_items, num_items: 0, raw_mean: None, raw_cov: None, all: vec![] }
    }

    pub fn is_full(&self) -> bool {
        self.num_items >= self.max_items
    }

    /// Adds rows of `x` [N, D] (on any device), dropping those beyond `max_items`.
    pub fn append(&mut self, x: &Tensor) {
        let room = self.max_items.saturating_sub(self.num_items) as i64;
        let n = x.size()[0].min(room);
        if n <= 0 {
            return;
        }
        let x = x.narrow(0, 0, n).to_kind(Kind::Float);
        self.num_items += n as usize;
        match self.capture {
            Capture::All => self.all.push(x.to_device(Device::Cpu)),
            Capture::MeanCov => {
                let x64 = x.to_kind(Kind::Double);
                let s = x64.sum_dim_intlist([0i64].as_slice(), false, Kind::Double);
                let c = x64.tr().matmul(&x64);
                match (&mut self.raw_mean, &mut self.raw_cov) {
                    (Some(m), Some(v)) => {
                        *m += s;
                        *v += c;
                    }
                    _ => {
                        self.raw_mean = Some(s);
                        self.raw_cov = Some(c);
                    }
                }
            }
        }
    }

    /// All features [N, D] (float32, CPU).
    pub fn all(&self) -> Result<Tensor> {
        ensure!(self.capture == Capture::All, "statistics keep no per-image features");
        ensure!(self.num_items > 0, "no images were evaluated");
        Ok(Tensor::cat(&self.all, 0))
    }

    /// Mean and covariance as the official `get_mean_cov` (normalised by N, float64, CPU).
    pub fn mean_cov(&self) -> Result<(Tensor, Tensor)> {
        ensure!(self.num_items > 0, "no images were evaluated");
        match self.capture {
            Capture::MeanCov => {
                let n = self.num_items as f64;
                let mean = self.raw_mean.as_ref().unwrap().to_device(Device::Cpu) / n;
                let cov = self.raw_cov.as_ref().unwrap().to_device(Device::Cpu) / n;
                let cov = cov - mean.unsqueeze(1).matmul(&mean.unsqueeze(0));
                Ok((mean, cov))
            }
            Capture::All => Ok(mean_cov(&self.all()?)),
        }
    }

    fn to_tensors(&self) -> Vec<(String, Tensor)> {
        let count = Tensor::from_slice(&[self.num_items as i64, self.max_items as i64]);
        let mut v = vec![("count".to_string(), count)];
        match self.capture {
            Capture::All => v.push(("features".into(), Tensor::cat(&self.all, 0))),
            Capture::MeanCov => {
                if let (Some(m), Some(c)) = (&self.raw_mean, &self.raw_cov) {
                    v.push(("raw_mean".into(), m.to_device(Device::Cpu)));
                    v.push(("raw_cov".into(), c.to_device(Device::Cpu)));
                }
            }
        }
        v
    }

    fn from_tensors(capture: Capture, t: &BTreeMap<String, Tensor>) -> Result<FeatureStats> {
        let count = t.get("count").context("no count")?;
        let (n, max) = (count.int64_value(&[0]) as usize, count.int64_value(&[1]) as usize);
        ensure!(n > 0 && n <= max, "count {n} of at most {max} images");
        let mut s = FeatureStats::new(capture, max);
        s.num_items = n;
        let get = |name: &str| -> Result<Tensor> {
            let x = t.get(name).with_context(|| format!("no {name}"))?;
            ensure!(crate::util::all_finite(x), "{name} holds NaN or infinite values");
            Ok(x.shallow_clone())
        };
        match capture {
            Capture::All => {
                let f = get("features")?;
                ensure!(f.dim() == 2 && f.size()[0] == n as i64, "features {:?} for {n} images", f.size());
                s.all = vec![f];
            }
            Capture::MeanCov => {
                let (m, c) = (get("raw_mean")?, get("raw_cov")?);
                let d = m.size();
                ensure!(d.len() == 1 && c.size() == [d[0], d[0]], "raw_mean {:?} and raw_cov {:?}", d, c.size());
                s.raw_mean = Some(m);
                s.raw_cov = Some(c);
            }
        }
        Ok(s)
    }
}

/// Mean and covariance normalised by N (the official `FeatureStats.get_mean_cov`), float64.
pub fn mean_cov(x: &Tensor) -> (Tensor, Tensor) {
    let x = x.to_kind(Kind::Double);
    let n = x.size()[0] as f64;
    let mean = x.mean_dim([0i64].as_slice(), false, Kind::Double);
    let cov = x.tr().matmul(&x) / n - mean.unsqueeze(1).matmul(&mean.unsqueeze(0));
    (mean, cov)
}

/// `$SG2_HOME/cache`.
pub fn cache_dir() -> PathBuf {
    super::detector::sg2_home().join("cache")
}

/// What identifies cached statistics of a dataset.
#[derive(Debug, Clone)]
pub struct CacheKey {
    pub dataset_fingerprint: String,
    pub detector_name: String,
    pub detector_hash: String,
    pub count: usize,
    pub resolution: usize,
    /// Detector arguments and capture kind, e.g. `return_features=true all`.
    pub kind: String,
}

impl CacheKey {
    fn text(&self) -> String {
        format!(
            "sg2-stats-1 dataset={} detector={} count={} resolution={} kind={}",
            self.dataset_fingerprint, self.detector_hash, self.count, self.resolution, self.kind
        )
    }

    /// The cache file for this key in `dir`.
    pub fn path(&self, dir: &Path) -> PathBuf {
        let h = crate::data::shards::hex(&Sha256::digest(self.text().as_bytes()));
        dir.join(format!("{}-{}-{}.safetensors", self.dataset_fingerprint, self.detector_name, &h[..16]))
    }
}

/// Statistics from the cache, or `compute()`d and stored. Returns them and whether they came from the cache.
pub fn cached(
    dir: Option<&Path>,
    key: &CacheKey,
    capture: Capture,
    compute: impl FnOnce() -> Result<FeatureStats>,
) -> Result<(FeatureStats, bool)> {
    let Some(dir) = dir else { return Ok((compute()?, false)) };
    if let Some(s) = load_cached(dir, key, capture) {
        return Ok((s, true));
    }
    let stats = compute()?;
    store_cached(dir, key, &stats);
    Ok((stats, false))
}

/// The statistics cached in `dir` for `key`, if a readable file of that key is there. A file that cannot be read,
/// fails its checksum, holds non-finite or inconsistent values or belongs to another key counts as absent (it is
/// recomputed and replaced); a damaged one is reported.
pub fn load_cached(dir: &Path, key: &CacheKey, capture: Capture) -> Option<FeatureStats> {
    let path = key.path(dir);
    if !path.is_file() {
        return None;
    }
    let loaded = read_safetensors(&path).and_then(|(t, meta)| {
        if meta.get("sg2.stats_key") != Some(&key.text()) {
            return Ok(None);
        }
        FeatureStats::from_tensors(capture, &t).map(Some)
    });
    match loaded {
        Ok(s) => s,
        Err(e) => {
            eprintln!("warning: {}: {e:#}; recomputing the statistics", path.display());
            None
        }
    }
}

/// Stores `stats` in `dir` for `key`. A cache that cannot be written (read-only home, full disk) costs time on the
/// next run, not this result: a warning, no error.
pub fn store_cached(dir: &Path, key: &CacheKey, stats: &FeatureStats) {
    let path = key.path(dir);
    let mut meta = BTreeMap::new();
    meta.insert("sg2.stats_key".to_string(), key.text());
    if let Err(e) = write_safetensors(&path, &stats.to_tensors(), &meta) {
        eprintln!("warning: {}: cannot write the statistics cache: {e:#}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_is_reused_per_key_and_recomputed_when_the_key_or_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let key = CacheKey {
            dataset_fingerprint: "abcd".into(),
            detector_name: "inception-2015-12-05".into(),
            detector_hash: "0123".into(),
            count: 10,
            resolution: 32,
            kind: "return_features=true MeanCov".into(),
        };
        let x = Tensor::randn([10, 4], (Kind::Float, Device::Cpu));
        let calls = std::cell::Cell::new(0);
        let run = |k: &CacheKey| {
            cached(Some(dir.path()), k, Capture::MeanCov, || {
                calls.set(calls.get() + 1);
                let mut s = FeatureStats::new(Capture::MeanCov, 10);
                s.append(&x);
                Ok(s)
            })
            .unwrap()
        };
        let (a, hit) = run(&key);
        assert!(!hit);
        let (b, hit) = run(&key);
        assert!(hit && calls.get() == 1);
        assert!(a.mean_cov().unwrap().1.equal(&b.mean_cov().unwrap().1));
        for change in [
            |k: &mut CacheKey| k.dataset_fingerprint = "abce".into(),
            |k: &mut CacheKey| k.detector_hash = "0124".into(),
            |k: &mut CacheKey| k.count = 11,
            |k: &mut CacheKey| k.resolution = 16,
        ] {
            let mut k = key.clone();
            change(&mut k);
            let before = calls.get();
            assert!(!run(&k).1 && calls.get() == before + 1);
        }
        // A damaged file is recomputed and replaced: garbage, an altered value, a NaN written with a valid checksum.
        std::fs::write(key.path(dir.path()), b"garbage").unwrap();
        assert!(!run(&key).1);
        assert!(run(&key).1);
        let mut bytes = std::fs::read(key.path(dir.path())).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(key.path(dir.path()), &bytes).unwrap();
        assert!(!run(&key).1);
        let (mut t, meta) = read_safetensors(&key.path(dir.path())).unwrap();
        let _ = t.get_mut("raw_mean").unwrap().get(0).fill_(f64::NAN);
        write_safetensors(&key.path(dir.path()), &t.into_iter().collect::<Vec<_>>(), &meta).unwrap();
        let before = calls.get();
        let (c, hit) = run(&key);
        assert!(!hit && calls.get() == before + 1);
        assert!(c.mean_cov().unwrap().0.isfinite().all().int64_value(&[]) == 1);
        assert!(run(&key).1);
        // No cache folder: always computed.
        let (_, hit) = cached(None, &key, Capture::MeanCov, || Ok(FeatureStats::new(Capture::MeanCov, 1))).unwrap();
        assert!(!hit);
    }

    #[test]
    fn running_sums_equal_the_direct_mean_and_covariance() {
        let x = Tensor::randn([37, 5], (Kind::Float, Device::Cpu));
        let mut s = FeatureStats::new(Capture::MeanCov, 30);
        for chunk in x.split(8, 0) {
            s.append(&chunk);
        }
        assert_eq!(s.num_items, 30);
        assert!(s.is_full());
        let (m1, c1) = s.mean_cov().unwrap();
        let (m2, c2) = mean_cov(&x.narrow(0, 0, 30));
        assert!((m1 - m2).abs().max().double_value(&[]) < 1e-12);
        assert!((c1 - c2).abs().max().double_value(&[]) < 1e-12);
    }
}
