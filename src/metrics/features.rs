//! Feature extraction: batches of uint8 NCHW images from a dataset, an image folder or a generator, through a
//! detector on its device, into [`FeatureStats`]. Images go to the device once per batch; the only per-image work
//! is copying records into the batch buffer.

use super::detector::Detector;
use super::shard::Shard;
use super::stats::{Capture, FeatureStats};
use super::RealSet;
use crate::data::sources::{images::Images, Payload, Source};
use crate::data::Dataset;
use crate::dist::Dist;
use crate::image_io::to_uint8;
use crate::model::{Generator, NoiseMode};
use crate::util::{progress_bar, Progress};
use anyhow::{bail, ensure, Context, Result};
use tch::{Device, Kind, Tensor};

/// One pass of images through a detector: its keyword flags, what is kept of the features, how many images in
/// batches of what size, whether a progress bar shows, and the ranks that share the batches (None: one process).
#[derive(Clone, Copy)]
pub struct FeaturePass<'a> {
    pub det: &'a Detector,
    pub kwargs: &'a [(&'a str, bool)],
    pub capture: Capture,
    pub count: usize,
    pub batch: usize,
    pub show: bool,
    pub dist: Option<&'a Dist>,
}

/// Runs `next_batch(start, n)` -> uint8 NCHW images over the pass's images, through the detector; `what` labels
/// the progress bar.
pub fn extract(
    pass: &FeaturePass,
    what: &str,
    next_batch: impl FnMut(usize, usize) -> Result<Tensor>,
) -> Result<FeatureStats> {
    extract_replaying(pass, what, next_batch, |_, _| Ok(()))
}

/// [`extract`] where the batches are shared over `pass.dist`'s ranks ([`Shard`]): `next_batch` runs for this
/// rank's batches, `skip(start, n)` for the others' (to make the random draws of a batch it does not compute);
/// the features of every rank are gathered in image order and the statistics taken from them on every rank, with
/// the same arithmetic as one process.
pub fn extract_replaying(
    pass: &FeaturePass,
    what: &str,
    mut next_batch: impl FnMut(usize, usize) -> Result<Tensor>,
    mut skip: impl FnMut(usize, usize) -> Result<()>,
) -> Result<FeatureStats> {
    let FeaturePass { det, kwargs, capture, count, batch, show, dist } = *pass;
    ensure!(batch >= 1, "batch size must be >= 1");
    let shard = Shard::new(dist, count, batch);
    let pb = progress_bar(Progress::Count, count as u64, what, show && shard.is_main());
    let mut stats = FeatureStats::new(capture, count);
    let mut mine = vec![];
    let (mut start, mut k) = (0, 0);
    while start < count {
        let n = batch.min(count - start);
        if shard.owns(k) {
            let imgs = next_batch(start, n)?;
            let feats = det.run_u8(&imgs, kwargs)?;
            if shard.is_split() {
                mine.push(feats.to_kind(Kind::Float).to_device(Device::Cpu));
            } else {
                stats.append(&feats);
            }
        } else {
            skip(start, n)?;
        }
        start += n;
        k += 1;
        pb.set_position(start as u64);
    }
    pb.finish_and_clear();
    if shard.is_split() {
        // Appended in the one-process batches, on the detector's device: the same sums in the same order.
        for rows in shard.gather(mine)?.to_device(det.device).split(batch as i64, 0) {
            stats.append(&rows);
        }
    }
    Ok(stats)
}

/// Records `start..start + n` of `ds` at `resolution` as a uint8 [n, C, R, R] tensor.
pub fn dataset_batch(ds: &Dataset, resolution: usize, start: usize, n: usize) -> Tensor {
    let size = ds.channels * resolution * resolution;
    let mut buf = Vec::with_capacity(n * size);
    for i in start..start + n {
        buf.extend_from_slice(ds.record(resolution, i as u64));
    }
    let (c, r) = (ds.channels as i64, resolution as i64);
    Tensor::from_slice(&buf).reshape([n as i64, c, r, r])
}

/// Features of the first `pass.count` images of a dataset (no shuffle, no mirror), as the official takes its reals.
pub fn dataset_features(pass: &FeaturePass, ds: &Dataset, resolution: usize) -> Result<FeatureStats> {
    ensure!(ds.has_level(resolution), "{}: no level {resolution}", ds.path.display());
    let pass = FeaturePass { count: pass.count.min(ds.count as usize), ..*pass };
    extract(&pass, "dataset features", |s, n| Ok(dataset_batch(ds, resolution, s, n)))
}

/// Record `i` of the official x-flipped dataset of `ds` (length 2N: records 0..N, then 0..N mirrored) at
/// `resolution`, as uint8 [C, R, R].
pub fn mirrored_record(ds: &Dataset, resolution: usize, i: usize) -> Tensor {
    let n = ds.count as usize;
    let (c, r) = (ds.channels as i64, resolution as i64);
    let img = Tensor::from_slice(ds.record(resolution, (i % n) as u64)).reshape([c, r, r]);
    if i >= n {
        img.flip([2])
    } else {
        img
    }
}

/// Features of a [`RealSet`] (the pass's count is the set's): the dataset's first records, or the x-flipped
/// dataset's (up to twice the dataset's size).
pub fn real_set_features(pass: &FeaturePass, reals: &RealSet) -> Result<FeatureStats> {
    let RealSet { ds, resolution, count, mirror } = *reals;
    let pass = FeaturePass { count, ..*pass };
    if !mirror {
        return dataset_features(&pass, ds, resolution);
    }
    ensure!(ds.has_level(resolution), "{}: no level {resolution}", ds.path.display());
    let pass = FeaturePass { count: count.min(2 * ds.count as usize), ..pass };
    extract(&pass, "dataset features (x-flipped)", |s, n| {
        Ok(Tensor::stack(&(s..s + n).map(|i| mirrored_record(ds, resolution, i)).collect::<Vec<_>>(), 0))
    })
}

/// An image folder or zip read for the metrics: decoded to RGB in sorted path order.
pub struct ImageFolder {
    pub images: Images,
}

impl ImageFolder {
    pub fn open(path: &std::path::Path) -> Result<ImageFolder> {
        Ok(ImageFolder { images: Images::open(path)? })
    }

    pub fn len(&self) -> usize {
        self.images.names().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Image `i` as uint8 [3, H, W].
    pub fn get(&mut self, i: usize) -> Result<Tensor> {
        let name = self.images.item_path(&self.images.names()[i].clone());
        let item = self.images.get(i as u64)?;
        let px = match item.payload {
            Payload::Encoded(b) => crate::data::sources::decode(&b, 3).with_context(|| name.clone())?,
            Payload::Raw(p) => p,
            Payload::TooLarge(why) => anyhow::bail!("{name}: too large to decode: {why}"),
            Payload::Unreadable(why) => anyhow::bail!("{name}: {why}"),
        }
        .with_channels(3);
        let t = Tensor::from_slice(&px.data).reshape([px.height as i64, px.width as i64, 3]);
        Ok(t.permute([2, 0, 1]).contiguous())
    }
}

/// Features of the first `pass.count` images of a folder. Images of one batch must share a size (the detectors
/// resize internally, but a batch is one tensor); a batch ends early where the size changes.
pub fn folder_features(pass: &FeaturePass, folder: &mut ImageFolder) -> Result<FeatureStats> {
    let FeaturePass { det, kwargs, capture, batch, show, .. } = *pass;
    let count = pass.count.min(folder.len());
    let pb = progress_bar(Progress::Count, count as u64, "image features", show);
    let mut stats = FeatureStats::new(capture, count);
    let mut pending: Vec<Tensor> = vec![];
    let flush = |pending: &mut Vec<Tensor>, stats: &mut FeatureStats| -> Result<()> {
        if !pending.is_empty() {
            stats.append(&det.run_u8(&Tensor::stack(pending, 0), kwargs)?);
            pending.clear();
        }
        Ok(())
    };
    for i in 0..count {
        let img = folder.get(i)?;
        if pending.first().is_some_and(|p| p.size() != img.size()) || pending.len() >= batch {
            flush(&mut pending, &mut stats)?;
        }
        pending.push(img);
        pb.set_position(i as u64 + 1);
    }
    flush(&mut pending, &mut stats)?;
    pb.finish_and_clear();
    Ok(stats)
}

/// Random labels for a conditional generator: one-hot rows of labels drawn uniformly from the dataset's records,
/// as the official `dataset.get_label(np.random.randint(len(dataset)))`.
pub fn random_labels(g: &Generator, ds: Option<&Dataset>, n: i64, device: Device) -> Result<Option<Tensor>> {
    let c_dim = g.c_dim();
    if c_dim == 0 {
        return Ok(None);
    }
    let Some(ds) = ds.filter(|d| d.num_classes > 0) else {
        bail!("the network is conditional ({c_dim} classes) but the dataset has no labels");
    };
    ensure!(
        ds.num_classes as i64 == c_dim,
        "{}: {} classes, the network has {c_dim}",
        ds.path.display(),
        ds.num_classes
    );
    let idx = Tensor::randint(ds.count as i64, [n], (Kind::Int64, Device::Cpu));
    let labels: Vec<i64> =
        Vec::<i64>::try_from(&idx)?.iter().map(|&i| ds.label(i as u64).unwrap_or(0) as i64).collect();
    let c = Tensor::from_slice(&labels).one_hot(c_dim).to_kind(Kind::Float).to_device(device);
    Ok(Some(c))
}

/// `pass.count` generated images as the official: z ~ N(0, I) from torch's generator, random noise, truncation
/// `psi`, `(img * 127.5 + 128).clamp(0, 255)` to uint8, through the detector; labels drawn from `labels`.
pub fn generator_features(
    pass: &FeaturePass,
    g: &Generator,
    labels: Option<&Dataset>,
    psi: f64,
) -> Result<FeatureStats> {
    let dev = g.synthesis.blocks[0].constant.as_ref().map(|c| c.device()).unwrap_or(pass.det.device);
    let next = |_, n: usize| {
        let z = Tensor::randn([n as i64, g.z_dim()], (Kind::Float, dev));
        let c = random_labels(g, labels, n as i64, dev)?;
        let img = tch::no_grad(|| g.forward(&z, c.as_ref(), psi, NoiseMode::Random));
        Ok(to_uint8(&img))
    };
    // Another rank's batch: the same draws, in the same order (z, labels, then each layer's noise as
    // `NoiseMode::Random` draws it), so the random stream stays where one process has it.
    let skip = |_, n: usize| {
        let _z = Tensor::randn([n as i64, g.z_dim()], (Kind::Float, dev));
        random_labels(g, labels, n as i64, dev)?;
        for r in g.synthesis.noise_resolutions() {
            let _noise = Tensor::randn([n as i64, 1, r, r], (Kind::Float, dev));
        }
        Ok(())
    };
    extract_replaying(pass, "generator features", next, skip)
}
