//! The pipe on real images, as `sg2 dataset-tool augment` shows it.

use super::AugmentPipe;
use crate::data::Dataset;
use anyhow::{ensure, Result};
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
