//! `sg2 train`: the loop over minibatches around [`Trainer::step`], in named steps on a [`Run`]: one minibatch,
//! the end of a tick (report, grids), a snapshot (metrics, best, retention) and a rollback. Tick and snapshot timing
//! follow the official `training_loop.py` (tick 0 ends after the first minibatch; a snapshot and a fakes grid are
//! always written when training ends).

use super::log::{cpu_mem_gib, gpu_mem_gib, is_jump, TickLine};
use super::loss::Phase;
use super::run::{Opened, Run};
use super::snapshot::{self, Best};
use super::trainer::NonFinite;
use super::Clock;
use crate::config::{AugmentMode, NanPolicy};
use crate::data::loader::Loader;
use crate::dist::Dist;
use crate::metrics::MetricResult;
use crate::model::Generator;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::Device;

pub use super::run::open_dataset;

/// Computes metrics of G_ema at a snapshot (the snapshot's path is given too; the file may not exist yet).
pub type MetricsFn = Box<dyn FnMut(&Generator, &Path) -> Result<Vec<MetricResult>>>;

/// Where a run starts from.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    /// The newest complete snapshot of this config and dataset under the output folder; continues in its folder.
    Latest,
    /// A given snapshot; the run continues in a new run folder.
    Path(PathBuf),
}

pub struct TrainOptions {
    /// The resolved config (overrides, --kimg, --seed and --resolution already applied).
    pub config: crate::config::Config,
    /// The config file's stem, for the run folder's name.
    pub config_name: String,
    pub data: PathBuf,
    pub outdir: PathBuf,
    pub resume: Option<Resume>,
    pub device: Device,
    /// Print to stdout (log.txt is always written).
    pub echo: bool,
    /// Run at each snapshot when `logging.metrics` is not empty.
    pub metrics: Option<MetricsFn>,
    /// Fault injection (tests): a NaN in this (minibatch, phase)'s loss, once.
    pub inject_nan: Option<(u64, Phase)>,
    /// Resume a snapshot on a dataset other than the one it was trained on.
    pub allow_dataset_change: bool,
    /// Transfer learning: start a new run from this network's G, D and G_ema (fresh optimizers, kimg 0).
    pub init: Option<PathBuf>,
    /// The data-parallel group this process belongs to (a group of one by default).
    pub dist: Arc<Dist>,
}

impl TrainOptions {
    pub fn new(config: crate::config::Config, config_name: &str, data: &Path, outdir: &Path) -> TrainOptions {
        TrainOptions {
            config,
            config_name: config_name.to_string(),
            data: data.to_path_buf(),
            outdir: outdir.to_path_buf(),
            resume: None,
            device: Device::Cpu,
            echo: false,
            metrics: None,
            inject_nan: None,
            allow_dataset_change: false,
            init: None,
            dist: Arc::new(Dist::single()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrainReport {
    pub run_dir: Option<PathBuf>,
    /// The last snapshot written (None when there was nothing to do).
    pub snapshot: Option<PathBuf>,
    pub cur_nimg: u64,
    pub rollbacks: u32,
    /// A signal stopped the run before total_kimg (after writing a snapshot).
    pub interrupted: bool,
}

/// What one minibatch led to.
enum Minibatch {
    /// Within a tick.
    Continue,
    /// The tick ended; `done`: training reached total_kimg.
    TickEnd { done: bool },
    /// A non-finite value was met and the last snapshot reloaded.
    RolledBack,
}

/// Trains as `opts` says; returns where the run went.
pub fn train(opts: TrainOptions) -> Result<TrainReport> {
    let echo = opts.echo;
    let opts_main = opts.dist.is_main();
    let _signals = (opts.dist.world == 1).then(super::interrupt::install);
    let mut run = match Run::open(opts)? {
        Opened::Run(run) => run,
        Opened::NothingToDo { snapshot, state } => {
            if echo && opts_main {
                println!(
                    "{}: already trained to {:.3} kimg: nothing to do",
                    snapshot.display(),
                    state.cur_nimg as f64 / 1000.0
                );
            }
            return Ok(TrainReport {
                run_dir: None,
                snapshot: None,
                cur_nimg: state.cur_nimg,
                rollbacks: state.rollbacks,
                interrupted: false,
            });
        }
    };
    loop {
        if let Minibatch::TickEnd { done } = run.minibatch()? {
            run.end_tick(done)?;
            if done {
                break;
            }
        }
    }
    // The others wait for rank 0's last snapshot, so no process ends before the run is complete.
    run.dist().barrier()?;
    if let Some(log) = run.log.as_mut() {
        log.finish_progress();
    }
    if run.interrupted {
        let snap = run.last_snapshot.as_ref().map_or(String::new(), |p| format!(": {}", p.display()));
        run.line(&format!(
            "interrupted at kimg {:.3}; snapshot written{snap} (continue with --resume latest)",
            run.trainer.state.cur_nimg as f64 / 1000.0
        ))?;
    }
    run.line("Exiting...")?;
    Ok(TrainReport {
        run_dir: Some(run.run_dir.clone()),
        snapshot: run.last_snapshot.clone(),
        cur_nimg: run.trainer.state.cur_nimg,
        rollbacks: run.trainer.state.rollbacks,
        interrupted: run.interrupted,
    })
}

impl Run {
    /// One minibatch; at a tick's end, the non-finite check (which rolls back or stops under those policies).
    fn minibatch(&mut self) -> Result<Minibatch> {
        let (images, labels) = self.loader.next_batch()?;
        let mut result = self.trainer.step(&images, labels.as_ref());
        self.trainer.state.loader = self.loader.state();
        let cur = self.trainer.state.cur_nimg;
        // A stop asked for by a signal ends the run here as if total_kimg were reached (a tick end with a snapshot).
        self.interrupted = cur < self.total_nimg && super::interrupt::requested();
        let done = cur >= self.total_nimg || self.interrupted;
        let tick_nimg = (self.cfg.logging.tick_kimg * 1000.0) as u64;
        let tick_end = done || self.trainer.state.cur_tick == 0 || cur >= self.clock.tick_start_nimg + tick_nimg;
        if result.is_ok() && tick_end {
            result = self.report_nonfinite();
        }
        if let Err(e) = result {
            let Some(nf) = e.downcast_ref::<NonFinite>().cloned() else { return Err(e) };
            self.rollback(nf)?;
            return Ok(Minibatch::RolledBack);
        }
        if let Some(log) = &self.log {
            log.progress(cur);
        }
        Ok(if tick_end { Minibatch::TickEnd { done } } else { Minibatch::Continue })
    }

    /// Under the official policy, a log line when gradients had to be repaired this tick; under stop / rollback the
    /// error (CUDA, where it is only read here).
    fn report_nonfinite(&mut self) -> Result<()> {
        let counts = self.trainer.check_nonfinite()?;
        if !counts.is_empty() {
            let what: Vec<String> = counts.iter().map(|(p, n)| format!("{} {n}", p.name())).collect();
            self.line(&format!(
                "warning: non-finite losses or gradients in tick {} ({}): NaN set to 0 and inf to +-1e5 before the \
                 optimizer steps, as the official loop does",
                self.trainer.state.cur_tick,
                what.join(", ")
            ))?;
        }
        Ok(())
    }

    /// Reloads the last snapshot with lower learning rates (nan_policy "rollback"), or fails with what happened.
    /// Every rank meets the same non-finite value (the flags are combined with the gradients); rank 0 reads the
    /// snapshot and sends its state to the others.
    fn rollback(&mut self, nf: NonFinite) -> Result<()> {
        let t = self.cfg.training.clone();
        let what = format!("tick {}: {nf}", self.trainer.state.cur_tick);
        self.line(&format!("error: {what}"))?;
        if t.nan_policy != NanPolicy::Rollback {
            bail!("{what} (training.nan_policy = \"rollback\" reloads the last snapshot and continues)");
        }
        let main = self.dist().is_main();
        let snap = if main { snapshot::read_latest(&self.run_dir) } else { None };
        let problem = match &snap {
            _ if self.rollbacks_in_a_row >= t.max_rollbacks => {
                Some(format!("{what}; gave up after {} rollbacks in a row", t.max_rollbacks))
            }
            None if main => Some(format!("{what}; no snapshot to roll back to")),
            _ => None,
        };
        if let Some(p) = self.dist().broadcast_json(&problem)? {
            bail!(p);
        }
        let factor = self.trainer.state.lr_factor * t.rollback_lr_factor;
        let rollbacks = self.trainer.state.rollbacks + 1;
        if let Some(snap) = &snap {
            let (ckpt, st) = snapshot::load(snap)?;
            self.trainer.restore(&ckpt, &st)?;
            self.trainer.state.lr_factor = factor;
            self.trainer.state.rollbacks = rollbacks;
        }
        self.trainer.sync_from_main()?;
        self.rollbacks_in_a_row += 1;
        let st = self.trainer.state.clone();
        self.loader = Loader::resume(self.ds.clone(), self.loader_opts.clone(), self.device, st.loader)?;
        self.clock.tick_start_nimg = self.trainer.state.cur_nimg;
        self.clock.tick = Clock::start();
        let (Some(log), Some(snap)) = (self.log.as_mut(), snap) else { return Ok(()) };
        let dropped = log.rewind(st.cur_nimg)?;
        log.line(&format!(
            "rollback: reloaded {} (kimg {:.3}); learning rates x{} (factor now {factor}); {dropped} later stats \
             records discarded",
            snap.display(),
            st.cur_nimg as f64 / 1000.0,
            t.rollback_lr_factor
        ))?;
        log.tb.scalar("Train/rollback", rollbacks as f64, st.cur_nimg as i64)?;
        Ok(())
    }

    /// The tick boundary, the only place values come back to the host: the tick line, collapse flags, grids,
    /// the snapshot, the stats record.
    fn end_tick(&mut self, done: bool) -> Result<()> {
        let tick_secs = self.clock.tick.secs();
        let maint_clock = Clock::start();
        let cur = self.trainer.state.cur_nimg;
        let tick = self.trainer.state.cur_tick;
        let mut values = self.trainer.take_stat_means()?;
        let line = TickLine {
            tick,
            cur_nimg: cur,
            total_sec: self.clock.start.secs(),
            sec_per_tick: tick_secs,
            sec_per_kimg: tick_secs / ((cur - self.clock.tick_start_nimg) as f64 / 1000.0).max(1e-9),
            maintenance: self.clock.maintenance,
            cpumem: cpu_mem_gib(),
            gpumem: gpu_mem_gib(self.trainer.device),
            augment: (self.cfg.augment.mode != AugmentMode::Noaug).then_some(self.trainer.state.augment_p),
        };
        let (g_lr, d_lr) = self.trainer.learning_rates();
        if let Some(g) = line.gpumem {
            values.insert("Resources/gpu_mem_gb".into(), g);
        }
        for (k, v) in [
            ("Progress/tick", tick as f64),
            ("Progress/kimg", cur as f64 / 1000.0),
            ("Timing/total_sec", line.total_sec),
            ("Timing/sec_per_tick", tick_secs),
            ("Timing/sec_per_kimg", line.sec_per_kimg),
            ("Timing/maintenance_sec", line.maintenance),
            ("Resources/cpu_mem_gb", line.cpumem),
            ("TrainG/learning_rate", g_lr),
            ("TrainD/learning_rate", d_lr),
            ("Train/r1_gamma", self.trainer.r1_gamma()),
            ("Train/lr_factor", self.trainer.state.lr_factor),
            ("Progress/augment", self.trainer.state.augment_p),
        ] {
            values.insert(k.into(), v);
        }
        self.line(&line.to_string())?;
        let flagged = self.collapse_flags(tick, &values)?;
        values.insert("Train/collapse_flag".into(), if flagged { 1.0 } else { 0.0 });

        let every = |n: u32| done || (n > 0 && tick.is_multiple_of(n as u64));
        if every(self.cfg.logging.image_snapshot_ticks) && self.log.is_some() {
            let path = self.run_dir.join(format!("fakes{}.png", snapshot::label(cur)));
            self.save_fakes(&path)?;
        }
        // The state a snapshot records is the next tick's, so a resumed run does not repeat this tick's number.
        self.trainer.state.cur_tick += 1;
        if every(self.cfg.logging.snapshot_ticks) {
            self.snapshot(&mut values)?;
        } else if let Some(log) = self.log.as_mut() {
            log.record(cur, &values)?;
        }
        self.clock.tick_start_nimg = cur;
        self.clock.maintenance = maint_clock.secs();
        self.clock.tick = Clock::start();
        Ok(())
    }

    /// Warns about a sharp jump of the mean D or G loss against the previous tick; true when one was seen.
    fn collapse_flags(&mut self, tick: u64, values: &BTreeMap<String, f64>) -> Result<bool> {
        let mut flagged = false;
        for key in ["Loss/D/loss", "Loss/G/loss"] {
            let Some(&now) = values.get(key) else { continue };
            if let Some(&prev) = self.clock.prev_losses.get(key) {
                if is_jump(prev, now, self.cfg.logging.collapse_factor) {
                    flagged = true;
                    self.line(&format!(
                        "warning: sharp jump in {key}: {prev:.4} -> {now:.4} at tick {tick} (possible collapse)"
                    ))?;
                }
            }
            self.clock.prev_losses.insert(key.to_string(), now);
        }
        Ok(flagged)
    }

    /// Metrics on G_ema first, so the snapshot records a best that includes itself; then the tick's record, the
    /// snapshot, `latest`, and retention (never the best). The record precedes the snapshot, so a kill between the
    /// two leaves a record that a resume from the previous snapshot discards, never a snapshot without its record.
    fn snapshot(&mut self, values: &mut BTreeMap<String, f64>) -> Result<()> {
        let cur = self.trainer.state.cur_nimg;
        let name = snapshot::snapshot_name(cur);
        let path = self.run_dir.join(&name);
        let stem = name.trim_end_matches(".safetensors").to_string();
        // An interrupted run is left quickly: its snapshot gets no metrics.
        let metrics = self.metrics.as_mut().filter(|_| !self.interrupted);
        if let (Some(f), false) = (metrics, self.cfg.logging.metrics.is_empty()) {
            // Metrics are defined on the direct fp32 convolutions: `training.cpu_bf16` and `cpu_winograd` are for
            // the training steps only.
            let g_ema = &self.trainer.g_ema;
            let results =
                crate::nn::ops::with_cpu_bf16(false, || crate::nn::ops::with_cpu_winograd(false, || f(g_ema, &path)));
            // A metric that fails (a detector giving NaN, too few images for it) costs its value, not the snapshot.
            let results = match results {
                Ok(r) => r,
                Err(e) => {
                    self.line(&format!("warning: {stem}: metrics failed: {}", format!("{e:#}").replace('\n', " ")))?;
                    vec![]
                }
            };
            for r in &results {
                self.line(&format!("{stem} {} {:.4}", r.name, r.value))?;
                values.insert(format!("Metrics/{}", r.name), r.value);
            }
            // The best is judged by the first value of the first configured metric.
            if let Some(r) = results.first() {
                let better = match &self.trainer.state.best {
                    None => true,
                    Some(b) if b.metric == r.name => r.is_better_than(b.value),
                    Some(_) => false,
                };
                if better {
                    self.trainer.state.best =
                        Some(Best { metric: r.name.clone(), value: r.value, snapshot: name.clone() });
                }
            }
        }
        if let Some(log) = self.log.as_mut() {
            log.record(cur, values)?;
        }
        self.trainer.save(&path, &self.fingerprint)?;
        self.rollbacks_in_a_row = 0;
        if self.log.is_none() {
            return Ok(());
        }
        snapshot::write_latest(&self.run_dir, &name)?;
        self.line(&format!("snapshot {}", path.display()))?;
        let best = self.trainer.state.best.as_ref().map(|b| b.snapshot.clone());
        for p in snapshot::retain(&self.run_dir, self.cfg.logging.keep_snapshots, best.as_deref())? {
            self.line(&format!("removed old snapshot {}", p.display()))?;
        }
        self.last_snapshot = Some(path);
        Ok(())
    }
}
