//! The training loader: batches of one level's records, shuffled per epoch and mirrored from a seed, assembled by
//! background threads straight from the memory-mapped shards and handed over as uint8 NCHW tensors.
//!
//! Everything a batch holds is a function of (seed, epoch, position), so [`Loader::resume`] from a saved
//! [`LoaderState`] yields exactly the batches the interrupted run would have seen. Batches run across epoch ends,
//! so every batch is full.

use super::create::permutation;
use super::shards::Dataset;
use crate::rng::splitmix64;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use tch::{Device, Tensor};

#[derive(Clone, Debug)]
pub struct LoaderOptions {
    /// The global batch: what all ranks together take per step.
    pub batch: usize,
    /// Data-parallel sharding: this rank takes records `rank`, `rank + world`, ... of each global batch (as the
    /// official `InfiniteSampler`), so ranks see disjoint images and the state is the same on every rank.
    pub rank: usize,
    pub world: usize,
    /// The level to read; must be one of the dataset's levels.
    pub resolution: usize,
    pub seed: u64,
    /// Flip each image horizontally with probability 0.5 (decided from the seed).
    pub mirror: bool,
    /// A new permutation every epoch; otherwise record order.
    pub shuffle: bool,
    /// Threads assembling batches.
    pub workers: usize,
    /// Batches prepared ahead.
    pub prefetch: usize,
}

impl LoaderOptions {
    pub fn new(batch: usize, resolution: usize) -> LoaderOptions {
        LoaderOptions {
            batch,
            rank: 0,
            world: 1,
            resolution,
            seed: 0,
            mirror: false,
            shuffle: true,
            workers: 2,
            prefetch: 4,
        }
    }
}

/// Where the loader stands: the next record is `position` of epoch `epoch`'s order.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoaderState {
    pub epoch: u64,
    pub position: u64,
    pub seed: u64,
}

/// Whether record `position` of `epoch` is mirrored.
pub fn flips(seed: u64, epoch: u64, position: u64) -> bool {
    let mut s = seed ^ epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ position.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    splitmix64(&mut s) & 1 == 1
}

/// The record order of an epoch.
pub fn epoch_order(count: u64, seed: u64, epoch: u64, shuffle: bool) -> Option<Vec<u64>> {
    let mut s = seed ^ 0x5851_f42d_4c95_7f2d ^ epoch.wrapping_mul(0x2545_f491_4f6c_dd1d);
    shuffle.then(|| permutation(count, splitmix64(&mut s)))
}

struct Job {
    seq: u64,
    items: Vec<(u64, bool)>,
}

struct Ready {
    images: Tensor,
    labels: Option<Tensor>,
}

type Done = (u64, Result<Ready>);

pub struct Loader {
    dataset: Arc<Dataset>,
    opts: LoaderOptions,
    device: Device,
    /// State after the last batch handed out.
    state: LoaderState,
    /// State after the last batch submitted to the workers.
    planned: LoaderState,
    order: (u64, Option<Arc<Vec<u64>>>),
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    /// States after each submitted, not yet handed out batch.
    in_flight: VecDeque<LoaderState>,
    arrived: BTreeMap<u64, Result<Ready>>,
    next_seq: u64,
    take_seq: u64,
    threads: Vec<JoinHandle<()>>,
}

fn assemble(ds: &Dataset, res: usize, items: &[(u64, bool)]) -> Result<Ready> {
    let c = ds.channels;
    let size = c * res * res;
    let mut buf = vec![0u8; items.len() * size];
    for ((idx, flip), dst) in items.iter().zip(buf.chunks_exact_mut(size)) {
        let src = ds.record(res, *idx);
        if *flip {
            for (drow, srow) in dst.chunks_exact_mut(res).zip(src.chunks_exact(res)) {
                for (d, s) in drow.iter_mut().zip(srow.iter().rev()) {
                    *d = *s;
                }
            }
        } else {
            dst.copy_from_slice(src);
        }
    }
    let n = items.len() as i64;
    let images = Tensor::from_slice(&buf).view([n, c as i64, res as i64, res as i64]);
    let labels = (ds.num_classes > 0).then(|| {
        let l: Vec<i64> = items.iter().map(|(i, _)| ds.label(*i).unwrap_or(0) as i64).collect();
        Tensor::from_slice(&l)
    });
    Ok(Ready { images, labels })
}

impl Loader {
    pub fn new(dataset: Arc<Dataset>, opts: LoaderOptions, device: Device) -> Result<Loader> {
        let state = LoaderState { epoch: 0, position: 0, seed: opts.seed };
        Self::resume(dataset, opts, device, state)
    }

    /// Continues from `state` (its seed wins over `opts.seed`).
    pub fn resume(
        dataset: Arc<Dataset>,
        mut opts: LoaderOptions,
        device: Device,
        state: LoaderState,
    ) -> Result<Loader> {
        ensure!(opts.batch >= 1, "batch size must be >= 1");
        ensure!(
            opts.world >= 1 && opts.rank < opts.world && opts.batch.is_multiple_of(opts.world),
            "batch {} cannot be split across {} ranks (rank {})",
            opts.batch,
            opts.world,
            opts.rank
        );
        ensure!(dataset.count > 0, "{}: the dataset is empty", dataset.path.display());
        ensure!(
            dataset.has_level(opts.resolution),
            "{}: no level {} (levels: {:?})",
            dataset.path.display(),
            opts.resolution,
            dataset.levels
        );
        ensure!(
            state.position < dataset.count,
            "loader state position {} >= dataset size {}",
            state.position,
            dataset.count
        );
        opts.seed = state.seed;
        opts.workers = opts.workers.max(1);
        opts.prefetch = opts.prefetch.max(1);
        let (job_tx, job_rx) = channel::<Job>();
        let (done_tx, done_rx) = channel::<Done>();
        let job_rx = Arc::new(Mutex::new(job_rx));
        let threads = (0..opts.workers)
            .map(|i| {
                let (rx, tx, ds) = (job_rx.clone(), done_tx.clone(), dataset.clone());
                let res = opts.resolution;
                std::thread::Builder::new()
                    .name(format!("sg2-loader-{i}"))
                    .spawn(move || loop {
                        let job = match rx.lock().unwrap().recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        };
                        if tx.send((job.seq, assemble(&ds, res, &job.items))).is_err() {
                            return;
                        }
                    })
                    .context("cannot start loader thread")
            })
            .collect::<Result<Vec<_>>>()?;
        let mut l = Loader {
            dataset,
            opts,
            device,
            state,
            planned: state,
            order: (u64::MAX, None),
            jobs: Some(job_tx),
            done: done_rx,
            in_flight: VecDeque::new(),
            arrived: BTreeMap::new(),
            next_seq: 0,
            take_seq: 0,
            threads,
        };
        for _ in 0..l.opts.prefetch {
            l.submit()?;
        }
        Ok(l)
    }

    fn submit(&mut self) -> Result<()> {
        let count = self.dataset.count;
        let mut st = self.planned;
        let mut items = Vec::with_capacity(self.opts.batch / self.opts.world);
        for k in 0..self.opts.batch {
            if st.position == count {
                st.epoch += 1;
                st.position = 0;
            }
            if self.order.0 != st.epoch {
                self.order = (st.epoch, epoch_order(count, st.seed, st.epoch, self.opts.shuffle).map(Arc::new));
            }
            let idx = self.order.1.as_ref().map_or(st.position, |o| o[st.position as usize]);
            if k % self.opts.world == self.opts.rank {
                items.push((idx, self.opts.mirror && flips(st.seed, st.epoch, st.position)));
            }
            st.position += 1;
        }
        if st.position == count {
            st.epoch += 1;
            st.position = 0;
        }
        self.planned = st;
        self.in_flight.push_back(st);
        let job = Job { seq: self.next_seq, items };
        self.next_seq += 1;
        self.jobs.as_ref().unwrap().send(job).ok().context("loader threads stopped")?;
        Ok(())
    }

    /// The next batch (this rank's share of it): uint8 NCHW images on the device and, for labelled datasets, int64 labels [N].
    pub fn next_batch(&mut self) -> Result<(Tensor, Option<Tensor>)> {
        let ready = loop {
            if let Some(r) = self.arrived.remove(&self.take_seq) {
                break r?;
            }
            let (seq, r) = self.done.recv().ok().context("loader threads stopped")?;
            self.arrived.insert(seq, r);
        };
        self.take_seq += 1;
        self.state = self.in_flight.pop_front().expect("a batch in flight");
        self.submit()?;
        let images = ready.images.to_device(self.device);
        let labels = ready.labels.map(|l| l.to_device(self.device));
        Ok((images, labels))
    }

    /// The state after the last batch returned; [`Loader::resume`] continues from it.
    pub fn state(&self) -> LoaderState {
        self.state
    }

    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
