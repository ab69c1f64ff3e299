//! The pipe on real images, as `sg2 dataset-tool augment` shows it.

use super::{preset, AugmentPipe};
use crate::data::Dataset;
use crate::image_io::{grid, to_uint8_nhwc, ImageU8};
use crate::model::checkpoint::write_safetensors;
use anyhow::{ensure, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// The first `count` images of a dataset in dataset order, full resolution, as NCHW float32 in [-1, 1] on the
/// CPU (`uint8 / 127.5 - 1`, as the official training loop feeds reals).
pub fn dataset_images(ds: &Dataset, count: u64) -> Result<Tensor> {
    ensure!(count >= 1, "count must be >= 1");
    ensure!(count <= ds.count, "{}: asked for {count} images, the dataset has {}", ds.path.display(), ds.count);
    let (r, c) = (ds.resolution, ds.channels);
    let mut buf = Vec::with_capacity(count as usize * c * r * r);
    for i in 0..count {
        buf.extend_from_slice(ds.record(r, i));
    }
    let u8s = Tensor::from_slice(&buf).view([count as i64, c as i64, r as i64, r as i64]);
    Ok(u8s.to_kind(Kind::Float) / 127.5 - 1.0)
}

/// [`dataset_images`] augmented once by `pipe`, with libtorch's CPU generator seeded with `seed` right before
/// the call (the protocol of the official pipe's reference outputs).
pub fn augment_dataset(ds: &Dataset, pipe: &AugmentPipe, count: u64, seed: u64) -> Result<Tensor> {
    let images = dataset_images(ds, count)?;
    // The generator takes the seed's 64 bits as they are.
    tch::manual_seed(seed as i64);
    Ok(pipe.forward(&images))
}

/// What `sg2 dataset-tool augment` shows.
#[derive(Debug, Clone)]
pub struct PreviewOptions {
    /// A preset name (see [`super::PRESETS`]).
    pub pipe: String,
    pub p: f64,
    pub seed: u64,
    pub count: u64,
}

impl PreviewOptions {
    /// Checks the options and builds the pipe.
    pub fn pipe(&self) -> Result<AugmentPipe> {
        ensure!(self.count >= 1, "--count must be >= 1");
        ensure!((0.0..=1.0).contains(&self.p), "--p must be in [0, 1], got {}", self.p);
        Ok(AugmentPipe::new(preset(&self.pipe)?, self.p))
    }
}

/// Augments the first images and writes them as a PNG grid (and, with `tensor_out`, as a safetensors batch under
/// key `images`). Returns the files written.
pub fn write_preview(ds: &Dataset, o: &PreviewOptions, out: &Path, tensor_out: Option<&Path>) -> Result<Vec<PathBuf>> {
    let pipe = o.pipe()?;
    // As the contact sheet of `dataset-tool grid`: a count above the dataset's size shows the whole dataset.
    let count = o.count.min(ds.count);
    if count < o.count {
        eprintln!("note: {} holds {count} images: showing all of them", ds.path.display());
    }
    let cols = (count as f64).sqrt().ceil() as u64;
    let (r, c) = (ds.resolution as u64, ds.channels as u64);
    crate::image_io::ensure_fits("--count", 1, cols * r, count.div_ceil(cols) * r, c)?;
    let images = augment_dataset(ds, &pipe, count, o.seed)?;

    let u8s = to_uint8_nhwc(&images);
    let tiles: Vec<ImageU8> = (0..count as i64).map(|i| ImageU8::from_nhwc(&u8s, i)).collect();
    let cols = cols as usize;
    grid(&tiles, cols)?.save(out)?;
    let mut written = vec![out.to_path_buf()];

    if let Some(path) = tensor_out {
        let meta = BTreeMap::from([
            ("dataset".to_string(), ds.path.display().to_string()),
            ("pipe".to_string(), o.pipe.clone()),
            ("p".to_string(), o.p.to_string()),
            ("seed".to_string(), o.seed.to_string()),
        ]);
        write_safetensors(path, &[("images".to_string(), images)], &meta)?;
        written.push(path.to_path_buf());
    }
    Ok(written)
}
