//! Metrics over a data-parallel group, as the official `metric_utils` with `num_gpus > 1`: the batches of a
//! feature pass (generated images, reals, PPL samples) are split into one contiguous block per rank; each rank
//! computes its block, the rows are gathered on every rank in sample order, and the statistics are computed from
//! the full set on every rank, as one process computes them.
//!
//! Random draws stay those of one process: every rank draws the latents, labels and noise of every batch in the
//! same order from the same seed (a batch it does not compute costs only the draws), so the images are the ones a
//! single process makes and the values equal its values (to float rounding where a batch runs on another device).

use crate::dist::Dist;
use anyhow::{ensure, Result};
use std::ops::Range;
use tch::{Device, Kind, Tensor};

/// Which batches of a pass this rank computes.
pub struct Shard<'a> {
    dist: Option<&'a Dist>,
    own: Range<usize>,
}

impl<'a> Shard<'a> {
    /// `count` items in batches of `batch` (the last one smaller) over `dist`'s ranks (None: one process).
    pub fn new(dist: Option<&'a Dist>, count: usize, batch: usize) -> Shard<'a> {
        let batches = count.div_ceil(batch.max(1));
        let own = match dist {
            Some(d) if d.world > 1 => batches * d.rank / d.world..batches * (d.rank + 1) / d.world,
            _ => 0..batches,
        };
        Shard { dist: dist.filter(|d| d.world > 1), own }
    }

    /// Whether this rank computes batch number `k`.
    pub fn owns(&self, k: usize) -> bool {
        self.own.contains(&k)
    }

    /// Whether the work is split over several ranks (else every batch is this process's).
    pub fn is_split(&self) -> bool {
        self.dist.is_some()
    }

    /// Whether this rank shows progress (rank 0).
    pub fn is_main(&self) -> bool {
        self.dist.is_none_or(|d| d.is_main())
    }

    /// Every rank's rows ([n, D] each, any device and float kind) concatenated in rank order: the full [N, D] set
    /// in sample order, float32 on the CPU, on every rank. A rank without batches contributes no rows.
    pub fn gather(&self, rows: Vec<Tensor>) -> Result<Tensor> {
        let rows: Vec<Tensor> = rows.iter().map(|r| r.to_kind(Kind::Float).to_device(Device::Cpu)).collect();
        for r in &rows {
            ensure!(r.dim() == 2, "gathered rows must be [N, D], got {:?}", r.size());
        }
        let local = (!rows.is_empty()).then(|| Tensor::cat(&rows, 0));
        let Some(dist) = self.dist else {
            return Ok(local.unwrap_or_else(|| Tensor::zeros([0, 0], (Kind::Float, Device::Cpu))));
        };
        // Ranks without rows need the width the others have (a [0, D] tensor for the gather).
        let width = local.as_ref().map_or(-1, |l| l.size()[1]);
        let widths = Vec::<i64>::try_from(&dist.gather_rows(&Tensor::from_slice(&[width]))?)?;
        let d = widths.iter().copied().max().unwrap_or(-1);
        ensure!(widths.iter().all(|&w| w == -1 || w == d), "ranks computed rows of different widths: {widths:?}");
        let local = local.unwrap_or_else(|| Tensor::zeros([0, d.max(0)], (Kind::Float, Device::Cpu)));
        dist.gather_rows(&local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::testing::on_ranks;

    /// Rows of batch `start..start + n`: row i holds (i, 2i).
    fn rows(start: usize, n: usize) -> Tensor {
        let i = Tensor::arange_start(start as i64, (start + n) as i64, (Kind::Float, Device::Cpu));
        Tensor::stack(&[i.shallow_clone(), &i * 2.0], 1)
    }

    fn pass(dist: Option<&Dist>, count: usize, batch: usize) -> Tensor {
        let shard = Shard::new(dist, count, batch);
        let mut mine = vec![];
        for (k, start) in (0..count).step_by(batch).enumerate() {
            if shard.owns(k) {
                mine.push(rows(start, batch.min(count - start)));
            }
        }
        shard.gather(mine).unwrap()
    }

    #[test]
    fn blocks_cover_every_batch_once_in_rank_order() {
        let d = [Dist::single()];
        let one = pass(Some(&d[0]), 7, 2);
        assert!(one.equal(&rows(0, 7)));
        assert!(pass(None, 7, 2).equal(&one));
        // Three ranks: 10 batches of 3 (the last 1 item) and 2 batches (rank 0 gets none).
        for (count, batch) in [(28, 3), (5, 4)] {
            let got = on_ranks(3, move |d| pass(Some(&d), count, batch));
            for g in got {
                assert!(g.equal(&rows(0, count)), "{count} in batches of {batch}: {g:?}");
            }
        }
    }
}
