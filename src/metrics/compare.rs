//! Two image sets compared with each other (`sg2 metrics --real A --fake B`), as pytorch-fid compares two folders,
//! and candidate images ranked by their distance to a reference set (`--rank`), for cleaning scraped datasets.
//!
//! A set is an sg2 dataset folder (its statistics are cached like the training data's) or a folder / zip of images.

use super::detector::{Detector, INCEPTION, VGG16};
use super::features::{folder_features, FeaturePass, ImageFolder};
use super::stats::{Capture, FeatureStats};
use super::{fid, kid, pr, real_stats, Detectors, MetricOptions, MetricResult};
use crate::data::sources::{shape, Payload, Source};
use crate::data::Dataset;
use anyhow::{bail, ensure, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

/// A dataset or an image folder.
pub enum ImageSet {
    Dataset(Box<Dataset>),
    Folder(ImageFolder),
}

impl ImageSet {
    pub fn open(path: &Path) -> Result<ImageSet> {
        if path.join(crate::data::shards::MANIFEST).is_file() {
            Ok(ImageSet::Dataset(Box::new(Dataset::open(path)?)))
        } else {
            Ok(ImageSet::Folder(ImageFolder::open(path)?))
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ImageSet::Dataset(d) => d.count as usize,
            ImageSet::Folder(f) => f.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A name per image: the file's path in the folder, or `record N` of a dataset.
    pub fn names(&self) -> Vec<String> {
        match self {
            ImageSet::Dataset(d) => (0..d.count).map(|i| format!("record {i}")).collect(),
            ImageSet::Folder(f) => f.images.names().to_vec(),
        }
    }

    /// Width, height and channels of the first image that decodes (a dataset's resolution and channels).
    fn first_shape(&mut self) -> Option<(usize, usize, usize)> {
        match self {
            ImageSet::Dataset(d) => Some((d.resolution, d.resolution, d.channels)),
            ImageSet::Folder(f) => (0..f.len().min(64)).find_map(|i| {
                let Payload::Encoded(b) = f.images.get(i as u64).ok()?.payload else { return None };
                let (w, h, gray) = shape(&b).ok()?;
                Some((w as usize, h as usize, if gray { 1 } else { 3 }))
            }),
        }
    }

    /// Features of the first `count` images (datasets through the statistics cache).
    pub fn stats(
        &mut self,
        det: &Detector,
        count: usize,
        kwargs: &[(&str, bool)],
        capture: Capture,
        opts: &MetricOptions,
    ) -> Result<FeatureStats> {
        match self {
            ImageSet::Dataset(d) => {
                let reals = super::RealSet { ds: d, resolution: d.resolution, count, mirror: false };
                real_stats(det, reals, kwargs, capture, opts)
            }
            ImageSet::Folder(f) => {
                // Folders are read by every rank whole (their batches follow the image sizes).
                let pass =
                    FeaturePass { det, kwargs, capture, count, batch: opts.batch, show: opts.progress, dist: None };
                folder_features(&pass, f)
            }
        }
    }
}

/// Says so when the two sets' images differ in size or colour: the detectors resize every image to their own input
/// (and repeat a gray channel), so the value is computed, but it then also measures that difference.
fn note_mismatch(real: &Path, a: &mut ImageSet, fake: &Path, b: &mut ImageSet) {
    let describe = |(w, h, c): (usize, usize, usize)| format!("{w}x{h} {}", if c == 1 { "grayscale" } else { "RGB" });
    if let (Some(sa), Some(sb)) = (a.first_shape(), b.first_shape()) {
        if sa != sb {
            eprintln!(
                "note: {} holds {} images and {} {} (first image of each); the detectors resize both to their \
                 input, so the value also measures that difference",
                real.display(),
                describe(sa),
                fake.display(),
                describe(sb)
            );
        }
    }
}

/// `fid`, `kid` and `pr` between two sets: `--num-real` / `--num-gen` limit each to its first images.
pub fn compare(real: &Path, fake: &Path, names: &[String], opts: &MetricOptions) -> Result<Vec<MetricResult>> {
    if let Some(other) = names.iter().find(|n| !["fid", "kid", "pr"].contains(&n.trim())) {
        bail!("--real/--fake compute fid, kid and pr; {other:?} needs --network and --data");
    }
    let mut a = ImageSet::open(real)?;
    let mut b = ImageSet::open(fake)?;
    note_mismatch(real, &mut a, fake, &mut b);
    let (na, nb) = (opts.num_real.unwrap_or(usize::MAX), opts.num_gen.unwrap_or(usize::MAX));
    let mut dets = Detectors::new(opts);
    let kw = [("return_features", true)];
    let mut out = vec![];
    for name in names {
        let name = name.trim();
        if let Some(seed) = opts.seed {
            tch::manual_seed(seed);
        }
        let t0 = Instant::now();
        let values = match name {
            "fid" => {
                let det = dets.get(INCEPTION)?;
                let (sa, sb) =
                    (a.stats(det, na, &kw, Capture::MeanCov, opts)?, b.stats(det, nb, &kw, Capture::MeanCov, opts)?);
                vec![("fid".to_string(), fid::fid(&sa, &sb)?)]
            }
            "kid" => {
                let det = dets.get(INCEPTION)?;
                let fa = a.stats(det, na, &kw, Capture::All, opts)?.all()?;
                let fb = b.stats(det, nb, &kw, Capture::All, opts)?.all()?;
                vec![("kid".to_string(), kid::kid(&fa, &fb, super::KID_SUBSETS, super::KID_SUBSET_SIZE, 0)?)]
            }
            "pr" => {
                let det = dets.get(VGG16)?;
                let fa = a.stats(det, na, &kw, Capture::All, opts)?.all()?.to_device(opts.device);
                let fb = b.stats(det, nb, &kw, Capture::All, opts)?.all()?.to_device(opts.device);
                let (p, r) = pr::precision_recall(&fa, &fb, super::PR_K, super::PR_BATCH, super::PR_BATCH)?;
                vec![("pr3_precision".to_string(), p), ("pr3_recall".to_string(), r)]
            }
            other => bail!("--real/--fake compute fid, kid and pr; {other:?} needs --network and --data"),
        };
        let seconds = t0.elapsed().as_secs_f64();
        let metric = values[0].0.split('_').next().unwrap_or(name).to_string();
        for (n, v) in values {
            let higher_is_better = metric == "pr3";
            out.push(MetricResult { name: n, value: v, seconds, metric: metric.clone(), higher_is_better });
        }
    }
    Ok(out)
}

/// A TSV field: TAB, newline, carriage return and backslash written as `\t`, `\n`, `\r` and `\\` (the escapes of
/// the "linear TSV" convention), so every candidate stays one line of four fields.
pub fn tsv_escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['\t', '\n', '\r', '\\']) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.into()
}

/// One ranked candidate.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub name: String,
    /// Distance in Inception feature space to the k-th nearest reference image.
    pub distance: f64,
    /// Within some reference image's k-NN radius (the precision criterion of precision/recall).
    pub inside: bool,
}

/// Ranks every candidate by its k-NN distance to the reference set (nearest first) and writes a TSV to `out`.
pub fn rank(reference: &Path, candidates: &Path, out: &Path, k: i64, opts: &MetricOptions) -> Result<Vec<Ranked>> {
    ensure!(k >= 1, "--k {k}: must be >= 1");
    let mut refs = ImageSet::open(reference)?;
    let mut cands = ImageSet::open(candidates)?;
    note_mismatch(reference, &mut refs, candidates, &mut cands);
    let mut dets = Detectors::new(opts);
    let det = dets.get(INCEPTION)?;
    let kw = [("return_features", true)];
    let fr = refs.stats(det, opts.num_real.unwrap_or(usize::MAX), &kw, Capture::All, opts)?.all()?;
    ensure!(fr.size()[0] > k, "{}: ranking with k={k} needs more than {k} reference images", reference.display());
    let fc = cands.stats(det, opts.num_gen.unwrap_or(usize::MAX), &kw, Capture::All, opts)?.all()?;
    let (fr, fc) = (fr.to_device(opts.device), fc.to_device(opts.device));
    let radii = pr::radii(&fr, k, super::PR_BATCH, super::PR_BATCH);
    let inside = pr::inside(&fr, &radii, &fc, super::PR_BATCH, super::PR_BATCH);
    let dist = tch::Tensor::cdist(&fc, &fr, 2.0, None::<i64>).kthvalue(k, 1, false).0;
    let dist = Vec::<f64>::try_from(&dist.to_kind(tch::Kind::Double).to_device(tch::Device::Cpu))?;
    let inside = Vec::<bool>::try_from(&inside.to_device(tch::Device::Cpu))?;
    let names = cands.names();
    let mut ranked: Vec<Ranked> =
        (0..dist.len()).map(|i| Ranked { name: names[i].clone(), distance: dist[i], inside: inside[i] }).collect();
    ranked.sort_by(|a, b| a.distance.total_cmp(&b.distance).then_with(|| a.name.cmp(&b.name)));
    let mut text = format!("rank\tname\tknn{k}_distance\tinside_reference\n");
    for (i, r) in ranked.iter().enumerate() {
        writeln!(text, "{}\t{}\t{:.6}\t{}", i + 1, tsv_escape(&r.name), r.distance, r.inside as u8).unwrap();
    }
    crate::util::write_bytes_atomic(out, text.as_bytes())?;
    Ok(ranked)
}

#[cfg(test)]
mod tests {
    use super::tsv_escape;

    #[test]
    fn tsv_fields_escape_separators_and_backslashes_reversibly() {
        assert!(matches!(tsv_escape("plain name.png"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(tsv_escape("a\tb\nc\rd\\e.png"), "a\\tb\\nc\\rd\\\\e.png");
        // A literal backslash followed by 't' stays distinct from an escaped TAB.
        assert_ne!(tsv_escape("x\\t"), tsv_escape("x\t"));
        assert_eq!(tsv_escape("x\\t"), "x\\\\t");
    }
}
