//! `sg2 bench train`: training throughput on random reals (no dataset needed), split by phase.

use super::loss::Phase;
use super::{Clock, Trainer};
use crate::config::Config;
use crate::dist::Dist;
use anyhow::Result;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

pub struct TrainBench {
    pub batch: u32,
    pub steps: u32,
    pub sec_per_kimg: f64,
    pub images_per_sec: f64,
    /// Seconds per phase over the timed steps (indexed by `Phase::index`).
    pub phase_secs: [f64; 6],
    /// The phases that ran in the timed steps, in the official order.
    pub phases: Vec<Phase>,
    pub total_secs: f64,
    /// Peak resident memory (GiB, summed over the processes), and GPU memory on CUDA (GiB, nvidia-smi; rank 0's).
    pub peak_rss_gib: f64,
    pub gpu_mem_gib: Option<f64>,
    /// The large-tensor CPU allocator's counters over the timed steps (when it is installed).
    pub alloc: Option<crate::ffi::cpu_alloc::AllocStats>,
}

impl std::fmt::Display for TrainBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "batch {}, {} timed minibatches, {:.2} s", self.batch, self.steps, self.total_secs)?;
        writeln!(f, "sec/kimg {:.2}  images/s {:.2}", self.sec_per_kimg, self.images_per_sec)?;
        let other = self.total_secs - self.phase_secs.iter().sum::<f64>();
        for p in &self.phases {
            write!(f, "{} {:.1}%  ", p.name(), 100.0 * self.phase_secs[p.index()] / self.total_secs)?;
        }
        writeln!(f, "other {:.1}%", 100.0 * other / self.total_secs)?;
        write!(f, "peak RSS {:.2} GiB", self.peak_rss_gib)?;
        if let Some(g) = self.gpu_mem_gib {
            write!(f, "  GPU memory {g:.2} GiB")?;
        }
        if let Some(a) = self.alloc {
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            write!(
                f,
                "\nlarge tensors: peak {:.2} GiB alive, {:.2} GiB alive + kept; of {} allocations {} reused a block, {} \
                 resized one",
                gib(a.peak_live),
                gib(a.peak_mapped),
                a.reuses + a.resizes + a.maps,
                a.reuses,
                a.resizes
            )?;
        }
        Ok(())
    }
}

/// Times `steps` minibatches after one warm-up round of every phase (lazy regularisation runs on its own schedule,
/// so use a multiple of d_reg_interval steps for a representative split). With a group of several processes, each
/// takes its share of the batch and the figures are the group's.
pub fn bench_train(cfg: &Config, device: Device, steps: u32, dist: Arc<Dist>) -> Result<TrainBench> {
    let mut tr = Trainer::new(cfg, device)?;
    tr.dist = dist.clone();
    tr.sync_from_main()?;
    tr.sync_timing = true;
    let m = &cfg.model;
    let batch = cfg.training.batch as i64;
    let local = batch / dist.world as i64;
    let res = m.resolution as i64;
    let reals = Tensor::randint(256, [local, m.channels as i64, res, res], (Kind::Uint8, device));
    let labels = (m.c_dim > 0).then(|| Tensor::randint(m.c_dim as i64, [local], (Kind::Int64, device)));
    // Warm-up: minibatch 0 runs every phase of the run; the count starts at index 1.
    tr.step(&reals, labels.as_ref())?;
    tr.phase_secs = [0.0; 6];
    let loss = tr.loss_settings();
    let mut ran: Vec<Phase> = vec![];
    for i in 1..=steps as u64 {
        for (_, p) in Trainer::phases_at(cfg, &loss, i) {
            if !ran.contains(&p) {
                ran.push(p);
            }
        }
    }
    ran.sort_by_key(|p| p.index());
    dist.barrier()?;
    let alloc_before = crate::ffi::cpu_alloc::stats();
    crate::ffi::cpu_alloc::reset_peaks();
    let clock = Clock::start();
    for _ in 0..steps {
        tr.step(&reals, labels.as_ref())?;
    }
    tr.check_nonfinite()?;
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
    dist.barrier()?;
    let total = clock.secs();
    let rss = Tensor::from_slice(&[super::log::peak_cpu_mem_gib()]);
    dist.sum_(&[&rss])?;
    let images = steps as f64 * batch as f64;
    let alloc = crate::ffi::cpu_alloc::stats();
    let alloc = (alloc.maps > 0).then(|| crate::ffi::cpu_alloc::AllocStats {
        maps: alloc.maps - alloc_before.maps,
        reuses: alloc.reuses - alloc_before.reuses,
        resizes: alloc.resizes - alloc_before.resizes,
        ..alloc
    });
    Ok(TrainBench {
        batch: batch as u32,
        steps,
        sec_per_kimg: total / images * 1000.0,
        images_per_sec: images / total,
        phase_secs: tr.phase_secs,
        phases: ran,
        peak_rss_gib: rss.double_value(&[0]),
        gpu_mem_gib: super::log::gpu_mem_gib(device),
        total_secs: total,
        alloc,
    })
}
