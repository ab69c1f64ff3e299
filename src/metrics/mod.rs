//! Quality metrics on the official detectors: FID, KID, precision/recall, IS and PPL, as stylegan2-ada-pytorch's
//! `metrics/` computes them (docs/METRICS.md).
//!
//! `evaluate_generator` is the one entry point for a network against a dataset (the CLI and training call it);
//! `compare` evaluates two image sets and ranks images for curation.

pub mod bench;
pub mod compare;
pub mod detector;
pub mod features;
pub mod fid;
pub mod is;
pub mod kid;
pub mod linalg;
pub mod ppl;
pub mod pr;
pub mod report;
pub mod shard;
pub mod stats;

use crate::data::Dataset;
use crate::model::{Generator, Space};
use anyhow::{bail, ensure, Result};
use detector::{Detector, INCEPTION, VGG16};
use features::FeaturePass;
use ppl::{PplSpec, Sampling};
use stats::{CacheKey, Capture, FeatureStats};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// What a metric computes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Fid,
    Kid,
    Pr,
    Is,
    Ppl(PplSpec),
}

/// A metric as registered: its official name, kind and counts.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    pub name: &'static str,
    pub kind: Kind,
    pub num_gen: usize,
    /// Real images used (None: all of them).
    pub max_real: Option<usize>,
    /// Whether a larger value is better (IS, precision, recall); FID, KID and PPL are distances.
    pub higher_is_better: bool,
    /// The TF-era names keep the dataset's x-flip setting for the reals (the official `metric_main.py` resets only
    /// `max_size` for them); the `_full` ones always read the reals unflipped.
    pub keeps_mirror: bool,
}

const fn ppl(space: Space, sampling: Sampling, crop: bool) -> Kind {
    Kind::Ppl(PplSpec { space, sampling, crop, epsilon: 1e-4 })
}

/// The official metrics (stylegan2-ada-pytorch `metric_main.py`), including the TF-era names.
pub const METRICS: &[MetricSpec] = &[
    MetricSpec {
        name: "fid50k_full",
        kind: Kind::Fid,
        num_gen: 50000,
        max_real: None,
        higher_is_better: false,
        keeps_mirror: false,
    },
    MetricSpec {
        name: "kid50k_full",
        kind: Kind::Kid,
        num_gen: 50000,
        max_real: Some(1_000_000),
        higher_is_better: false,
        keeps_mirror: false,
    },
    MetricSpec {
        name: "pr50k3_full",
        kind: Kind::Pr,
        num_gen: 50000,
        max_real: Some(200_000),
        higher_is_better: true,
        keeps_mirror: false,
    },
    MetricSpec {
        name: "ppl2_wend",
        kind: ppl(Space::W, Sampling::End, false),
        num_gen: 50000,
        max_real: None,
        higher_is_better: false,
        keeps_mirror: false,
    },
    MetricSpec {
        name: "is50k",
        kind: Kind::Is,
        num_gen: 50000,
        max_real: None,
        higher_is_better: true,
        keeps_mirror: false,
    },
    MetricSpec {
        name: "fid50k",
        kind: Kind::Fid,
        num_gen: 50000,
        max_real: Some(50000),
        higher_is_better: false,
        keeps_mirror: true,
    },
    MetricSpec {
        name: "kid50k",
        kind: Kind::Kid,
        num_gen: 50000,
        max_real: Some(50000),
        higher_is_better: false,
        keeps_mirror: true,
    },
    MetricSpec {
        name: "pr50k3",
        kind: Kind::Pr,
        num_gen: 50000,
        max_real: Some(50000),
        higher_is_better: true,
        keeps_mirror: true,
    },
    MetricSpec {
        name: "ppl_zfull",
        kind: ppl(Space::Z, Sampling::Full, true),
        num_gen: 50000,
        max_real: None,
        higher_is_better: false,
        keeps_mirror: true,
    },
    MetricSpec {
        name: "ppl_wfull",
        kind: ppl(Space::W, Sampling::Full, true),
        num_gen: 50000,
        max_real: None,
        higher_is_better: false,
        keeps_mirror: true,
    },
    MetricSpec {
        name: "ppl_zend",
        kind: ppl(Space::Z, Sampling::End, true),
        num_gen: 50000,
        max_real: None,
        higher_is_better: false,
        keeps_mirror: true,
    },
    MetricSpec {
        name: "ppl_wend",
        kind: ppl(Space::W, Sampling::End, true),
        num_gen: 50000,
        max_real: None,
        higher_is_better: false,
        keeps_mirror: true,
    },
];

/// KID's subsets (official: 100 of at most 1000).
pub const KID_SUBSETS: usize = 100;
pub const KID_SUBSET_SIZE: usize = 1000;
/// Precision/recall neighbourhood and batch sizes (official: k = 3, 10000 x 10000).
pub const PR_K: i64 = 3;
pub const PR_BATCH: i64 = 10000;
/// IS splits.
pub const IS_SPLITS: usize = 10;

pub fn spec(name: &str) -> Result<&'static MetricSpec> {
    match METRICS.iter().find(|m| m.name == name) {
        Some(m) => Ok(m),
        None => {
            let all: Vec<&str> = METRICS.iter().map(|m| m.name).collect();
            bail!("unknown metric {name:?}; known: {}", all.join(", "))
        }
    }
}

impl MetricSpec {
    /// The detector file the metric runs on.
    pub fn detector(&self) -> &'static str {
        match self.kind {
            Kind::Fid | Kind::Kid | Kind::Is => detector::INCEPTION,
            Kind::Pr | Kind::Ppl(_) => detector::VGG16,
        }
    }
}

/// "50k", "5k", "1500".
pub fn count_label(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// The printed name: the official one, or with `--num-gen` / `--num-real` the counts it was computed with
/// (`fid50k_full` with 5000 fakes is `fid5k_full`; with 5000 reals as well `fid5k`, with other reals `fid5k_r2k`;
/// PPL names get `_5k`).
pub fn printed_name(m: &MetricSpec, num_gen: Option<usize>, num_real: Option<usize>) -> String {
    if num_gen.is_none() && num_real.is_none() {
        return m.name.to_string();
    }
    let gen = num_gen.unwrap_or(m.num_gen);
    if let Kind::Ppl(_) = m.kind {
        return format!("{}_{}", m.name, count_label(gen));
    }
    let full = m.name.ends_with("_full");
    let label = count_label(gen);
    // `pr50k3` with 20 images is `pr20_3`, not `pr203`.
    let label = if label.ends_with('k') { label } else { format!("{label}_") };
    let base = m.name.trim_end_matches("_full").replacen("50k", &label, 1).replace("__", "_");
    let base = base.trim_end_matches('_').to_string();
    let real = match (num_real, full, m.max_real) {
        (None, true, _) => "_full".to_string(),
        (Some(r), _, _) | (None, false, Some(r)) if r == gen => String::new(),
        (Some(r), _, _) | (None, false, Some(r)) => format!("_r{}", count_label(r)),
        (None, false, None) => String::new(),
    };
    if m.kind == Kind::Is {
        return base;
    }
    format!("{base}{real}")
}

/// The generated and real images that metric `m` takes with `opts` from `ds` (the reals capped by the dataset, which
/// the TF-era metrics read x-flipped, twice as many, when the network was trained mirrored).
fn planned_counts(m: &MetricSpec, opts: &MetricOptions, ds: Option<&Dataset>) -> (usize, usize) {
    let available = ds.map_or(0, |ds| ds.count as usize) * if opts.mirror && m.keeps_mirror { 2 } else { 1 };
    let real = opts.num_real.or(m.max_real).map_or(available, |n| n.min(available));
    (opts.num_gen.unwrap_or(m.num_gen), real)
}

/// Refuses counts that a metric cannot be computed with, before any image is made: KID needs 2 of each,
/// precision/recall more than k, IS one image per split. Training checks its `logging.metrics` so before the first
/// minibatch.
pub fn check_counts(names: &[String], opts: &MetricOptions, ds: Option<&Dataset>) -> Result<()> {
    for n in names {
        let m = spec(n.trim())?;
        let (gen, real) = planned_counts(m, opts, ds);
        let k = PR_K as usize;
        let (min_gen, min_real) = match m.kind {
            Kind::Kid => (2, 2),
            Kind::Pr => (k + 1, k + 1),
            Kind::Is => (IS_SPLITS, 0),
            Kind::Fid | Kind::Ppl(_) => (1, 0),
        };
        ensure!(gen >= min_gen, "{}: needs at least {min_gen} generated images, {gen} asked", m.name);
        if min_real > 0 {
            let ds = ds.ok_or_else(|| no_reals(m))?;
            ensure!(
                real >= min_real,
                "{}: needs at least {min_real} real images, {real} available ({} holds {})",
                m.name,
                ds.path.display(),
                ds.count
            );
        }
    }
    Ok(())
}

/// Options of a metrics run.
#[derive(Debug, Clone)]
pub struct MetricOptions {
    /// Folder of the detector files (default `$SG2_HOME/detectors`).
    pub detector_dir: Option<PathBuf>,
    /// Generated images (or PPL samples), overriding each metric's count.
    pub num_gen: Option<usize>,
    /// Real images, overriding each metric's count.
    pub num_real: Option<usize>,
    /// Truncation of the generated images for FID, KID, PR and IS (the official uses 1; PPL always uses 1).
    pub truncation_psi: f64,
    /// Images per generator / detector batch.
    pub batch: usize,
    pub device: tch::Device,
    /// Progress bars on stderr.
    pub progress: bool,
    /// Cache folder for real-image statistics (None: no cache). Default `$SG2_HOME/cache`.
    pub cache_dir: Option<PathBuf>,
    /// Seeds torch's generator before each metric (reproducible runs); None keeps the caller's stream (training).
    pub seed: Option<i64>,
    /// The dataset's x-flip setting in training (`training.mirror`): the TF-era metrics (`fid50k`, `kid50k`,
    /// `pr50k3`, `ppl_*`) then read the reals as the official x-flipped dataset (every image, then every image
    /// mirrored); the `_full` ones never do.
    pub mirror: bool,
    /// The data-parallel group that shares the work (None: this process alone). With several ranks every rank
    /// must call [`evaluate_generator`] with the same arguments: each computes its share of the generated images,
    /// reals and PPL samples, the features are gathered, and every rank returns the values one process computes.
    /// Progress bars show on rank 0 only; only rank 0 writes the statistics cache.
    pub dist: Option<Arc<crate::dist::Dist>>,
}

impl MetricOptions {
    pub fn new(device: tch::Device) -> MetricOptions {
        MetricOptions {
            detector_dir: None,
            num_gen: None,
            num_real: None,
            truncation_psi: 1.0,
            batch: 32,
            device,
            progress: false,
            cache_dir: Some(stats::cache_dir()),
            seed: None,
            mirror: false,
            dist: None,
        }
    }

    /// The group sharing the work, if any.
    pub fn dist(&self) -> Option<&crate::dist::Dist> {
        self.dist.as_deref()
    }

    /// Whether this process prints and writes files: the only process, or rank 0 of the group.
    pub fn is_main(&self) -> bool {
        self.dist().is_none_or(|d| d.is_main())
    }
}

/// One printed result: name (`fid50k_full`, `pr50k3_full_precision`), value and the seconds its metric took.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricResult {
    pub name: String,
    pub value: f64,
    pub seconds: f64,
    /// The metric that produced it (`pr50k3_full` for both precision and recall).
    pub metric: String,
    /// From the metric's spec: whether a larger value is better.
    pub higher_is_better: bool,
}

impl MetricResult {
    /// Whether this value beats `other` of the same metric.
    pub fn is_better_than(&self, other: f64) -> bool {
        if self.higher_is_better {
            self.value > other
        } else {
            self.value < other
        }
    }
}

/// Detectors loaded once per run.
pub struct Detectors<'a> {
    opts: &'a MetricOptions,
    loaded: BTreeMap<&'static str, Detector>,
}

impl<'a> Detectors<'a> {
    pub fn new(opts: &'a MetricOptions) -> Self {
        Detectors { opts, loaded: BTreeMap::new() }
    }

    pub fn get(&mut self, file: &'static str) -> Result<&Detector> {
        if !self.loaded.contains_key(file) {
            let d = Detector::find_and_load(self.opts.detector_dir.as_deref(), file, self.opts.device)?;
            self.loaded.insert(file, d);
        }
        Ok(&self.loaded[file])
    }
}

/// Which reals a metric reads: the first `count` records of a dataset at `resolution`, optionally as the x-flipped
/// dataset (records 0..N, then 0..N mirrored).
#[derive(Clone, Copy)]
pub struct RealSet<'a> {
    pub ds: &'a Dataset,
    pub resolution: usize,
    pub count: usize,
    pub mirror: bool,
}

/// Real-image statistics of a [`RealSet`], cached.
pub fn real_stats(
    det: &Detector,
    reals: RealSet,
    kwargs: &[(&str, bool)],
    capture: Capture,
    opts: &MetricOptions,
) -> Result<FeatureStats> {
    let RealSet { ds, resolution, count, mirror } = reals;
    let available = ds.count as usize * if mirror { 2 } else { 1 };
    let count = count.min(available);
    let args: Vec<String> = kwargs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let key = CacheKey {
        dataset_fingerprint: ds.fingerprint(),
        detector_name: det.name.clone(),
        detector_hash: det.hash.clone(),
        count,
        resolution,
        kind: format!("{} {:?}{}", args.join(","), capture, if mirror { " xflip" } else { "" }),
    };
    let compute = || {
        let pass =
            FeaturePass { det, kwargs, capture, count, batch: opts.batch, show: opts.progress, dist: opts.dist() };
        features::real_set_features(&pass, &RealSet { count, ..reals })
    };
    let Some(dir) = opts.cache_dir.as_deref() else { return compute() };
    // Every rank reads the cache; all use it only when all found it (ranks on other machines may not see rank 0's
    // folder), else all compute together. Only rank 0 writes.
    let found = stats::load_cached(dir, &key, capture);
    let all_found = match opts.dist() {
        Some(d) => !d.any(found.is_none())?,
        None => found.is_some(),
    };
    if let (true, Some(s)) = (all_found, found) {
        if opts.progress && opts.is_main() {
            eprintln!("using cached real-image statistics {}", key.path(dir).display());
        }
        return Ok(s);
    }
    let s = compute()?;
    if opts.is_main() {
        stats::store_cached(dir, &key, &s);
    }
    Ok(s)
}

/// The dataset level compared with the generator: the network's resolution, which the dataset must hold (its full
/// resolution or a level of detail), with the network's channels. Scoring unlike images gives a number that means
/// nothing, so the official tool refuses too.
pub fn real_resolution(g: &Generator, ds: &Dataset) -> Result<usize> {
    let (r, c) = (g.img_resolution() as usize, g.img_channels() as usize);
    ensure!(
        ds.channels == c,
        "{}: {}-channel images, the network makes {c}-channel images; metrics compare like with like",
        ds.path.display(),
        ds.channels
    );
    ensure!(
        ds.has_level(r),
        "{}: {}x{} images (levels {:?}), the network makes {r}x{r}; metrics need the network's resolution",
        ds.path.display(),
        ds.resolution,
        ds.resolution,
        ds.levels
    );
    Ok(r)
}

/// Evaluates `names` for generator `g` against the dataset folder `data`; each result: (printed name, value,
/// seconds).
pub fn evaluate_generator(
    g: &Generator,
    data: &Path,
    names: &[String],
    opts: &MetricOptions,
) -> Result<Vec<MetricResult>> {
    evaluate(g, Some(&Dataset::open(data)?), names, opts)
}

fn no_reals(m: &MetricSpec) -> anyhow::Error {
    anyhow::anyhow!("{}: compares with real images: give --data", m.name)
}

/// Whether a metric compares with real images (FID, KID, precision/recall); IS and PPL need generated ones only.
pub fn needs_reals(m: &MetricSpec) -> bool {
    matches!(m.kind, Kind::Fid | Kind::Kid | Kind::Pr)
}

/// [`evaluate_generator`] on an open dataset, or on none when every metric is IS or PPL of an unconditional
/// network (a conditional one draws its labels from the dataset, as the official).
pub fn evaluate(
    g: &Generator,
    ds: Option<&Dataset>,
    names: &[String],
    opts: &MetricOptions,
) -> Result<Vec<MetricResult>> {
    ensure!(!names.is_empty(), "no metrics given");
    let specs: Vec<&MetricSpec> = names.iter().map(|n| spec(n.trim())).collect::<Result<_>>()?;
    let res = match ds {
        Some(ds) => real_resolution(g, ds)?,
        None => {
            ensure!(g.c_dim() == 0, "a conditional network draws its labels from the dataset: give --data");
            g.img_resolution() as usize
        }
    };
    check_counts(names, opts, ds)?;
    let mut dets = Detectors::new(opts);
    let mut out = vec![];
    for m in specs {
        if let Some(seed) = opts.seed {
            tch::manual_seed(seed);
        }
        let t0 = Instant::now();
        // The x-flipped dataset of the TF-era metrics holds every image twice.
        let mirror = opts.mirror && m.keeps_mirror;
        let available = ds.map_or(0, |ds| ds.count as usize) * if mirror { 2 } else { 1 };
        // More reals than the dataset holds: all of them, and the printed name says how many.
        let given_real = opts.num_real.map(|n| n.min(available)).filter(|_| ds.is_some());
        if let (Some(asked), Some(used), Some(ds)) = (opts.num_real, given_real, ds) {
            if asked > used && opts.is_main() {
                eprintln!("warning: {asked} real images asked, {} holds {used}: using {used}", ds.path.display());
            }
        }
        // With --num-gen alone, a TF-era metric's name gives the reals it used: its cap, or all of a smaller
        // dataset (the official names, printed without overrides, keep the cap).
        let capped = m.max_real.filter(|_| !m.name.ends_with("_full"));
        let named_real = given_real.or_else(|| opts.num_gen.and(capped.map(|r| r.min(available))));
        let name = printed_name(m, opts.num_gen, named_real);
        let num_gen = opts.num_gen.unwrap_or(m.num_gen);
        let num_real = given_real.or(m.max_real).unwrap_or(usize::MAX);
        let reals = || -> Result<RealSet> {
            let ds = ds.ok_or_else(|| no_reals(m))?;
            Ok(RealSet { ds, resolution: res, count: num_real, mirror })
        };
        let fakes = |det: &Detector, kw: &[(&str, bool)], capture: Capture| {
            let pass = FeaturePass {
                det,
                kwargs: kw,
                capture,
                count: num_gen,
                batch: opts.batch,
                show: opts.progress,
                dist: opts.dist(),
            };
            features::generator_features(&pass, g, ds, opts.truncation_psi)
        };
        let values: Vec<(String, f64)> = match m.kind {
            Kind::Fid => {
                let det = dets.get(INCEPTION)?;
                let kw = [("return_features", true)];
                let real = real_stats(det, reals()?, &kw, Capture::MeanCov, opts)?;
                let gen = fakes(det, &kw, Capture::MeanCov)?;
                vec![(name.clone(), fid::fid(&real, &gen)?)]
            }
            Kind::Kid | Kind::Pr => {
                let det = dets.get(if m.kind == Kind::Kid { INCEPTION } else { VGG16 })?;
                let kw = [("return_features", true)];
                let real = real_stats(det, reals()?, &kw, Capture::All, opts)?.all()?;
                let gen = fakes(det, &kw, Capture::All)?.all()?;
                let (r, f) = (real.to_device(opts.device), gen.to_device(opts.device));
                if m.kind == Kind::Kid {
                    vec![(name.clone(), kid::kid(&r, &f, KID_SUBSETS, KID_SUBSET_SIZE, 0)?)]
                } else {
                    let (p, rc) = pr::precision_recall(&r, &f, PR_K, PR_BATCH, PR_BATCH)?;
                    vec![(format!("{name}_precision"), p), (format!("{name}_recall"), rc)]
                }
            }
            Kind::Is => {
                let det = dets.get(INCEPTION)?;
                let probs = fakes(det, &[("no_output_bias", true)], Capture::All)?.all()?;
                let (mean, std) = is::inception_score(&probs, IS_SPLITS)?;
                vec![(format!("{name}_mean"), mean), (format!("{name}_std"), std)]
            }
            Kind::Ppl(spec) => {
                let det = dets.get(VGG16)?;
                let show = opts.progress;
                vec![(name.clone(), ppl::ppl(g, det, &spec, ds, num_gen, opts.batch, show, opts.dist())?)]
            }
        };
        let seconds = t0.elapsed().as_secs_f64();
        for (n, v) in values {
            ensure!(v.is_finite(), "{n}: the value is not finite ({v})");
            out.push(MetricResult {
                name: n,
                value: v,
                seconds,
                metric: name.clone(),
                higher_is_better: m.higher_is_better,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_names_say_the_counts() {
        let n = |name: &str, g: Option<usize>, r: Option<usize>| printed_name(spec(name).unwrap(), g, r);
        assert_eq!(n("fid50k_full", None, None), "fid50k_full");
        assert_eq!(n("fid50k_full", Some(5000), None), "fid5k_full");
        assert_eq!(n("fid50k_full", Some(5000), Some(5000)), "fid5k");
        assert_eq!(n("fid50k_full", Some(5000), Some(2000)), "fid5k_r2k");
        assert_eq!(n("fid50k", Some(5000), None), "fid5k_r50k");
        assert_eq!(n("fid50k", None, Some(50000)), "fid50k");
        assert_eq!(n("kid50k_full", Some(1500), None), "kid1500_full");
        assert_eq!(n("pr50k3_full", Some(20), None), "pr20_3_full");
        assert_eq!(n("fid50k_full", Some(20), Some(30)), "fid20_r30");
        assert_eq!(n("pr50k3_full", Some(5000), None), "pr5k3_full");
        assert_eq!(n("is50k", Some(5000), Some(100)), "is5k");
        assert_eq!(n("ppl2_wend", Some(5000), None), "ppl2_wend_5k");
        assert!(spec("fid").unwrap_err().to_string().contains("fid50k_full"));
    }
}
