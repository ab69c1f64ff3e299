//! One training minibatch as the official `training_loop.py` runs it: phases Gmain, Greg, Dmain, Dreg (the
//! regularisation phases every `g_reg_interval` / `d_reg_interval` minibatches, with Adam's learning rate and betas
//! scaled by interval / (interval + 1)), then the G_ema update. Owns the networks, optimizers and `pl_mean`.

use super::adam::{Adam, AdamParams};
use super::log::StatSums;
use super::loss::{self, Phase, PhaseOut};
use super::snapshot::{self, Parts, TrainState};
use super::{ema, Clock};
use crate::config::{schedule_value, Config};
use crate::data::loader::LoaderState;
use crate::image_io::{to_uint8_nhwc, ImageU8};
use crate::model::checkpoint::{copy_into, Checkpoint};
use crate::model::{Discriminator, Generator, NoiseMode};
use crate::nn::ModConv;
use anyhow::{bail, Result};
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// A non-finite loss or gradient: where it happened. Training stops the step (or rolls back).
#[derive(Debug, Clone, thiserror::Error)]
#[error("non-finite {loss} (loss or its gradient) in phase {phase} at minibatch {batch_idx}, kimg {kimg:.3}")]
pub struct NonFinite {
    pub phase: &'static str,
    pub loss: &'static str,
    pub batch_idx: u64,
    pub kimg: f64,
}

fn loss_name(p: Phase) -> &'static str {
    match p {
        Phase::Gmain => "Loss/G/loss",
        Phase::Greg => "Loss/G/reg (path length)",
        Phase::Dmain => "Loss/D/loss",
        Phase::Dreg => "Loss/D/reg (R1)",
    }
}

/// Named tensors of a VarStore, split into trainable parameters and buffers, in name order.
type Named = Vec<(String, Tensor)>;

fn split_vars(vs: &VarStore) -> (Named, Named) {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.into_iter().partition(|(_, t)| t.requires_grad())
}

fn set_trainable(params: &[(String, Tensor)], on: bool) {
    for (_, p) in params {
        let _ = p.set_requires_grad(on);
    }
}

/// The seed of minibatch `batch_idx`'s random draws: every draw of a step is a function of (seed, index), so a
/// resumed run continues exactly.
pub fn step_seed(seed: u64, batch_idx: u64) -> i64 {
    let mut s = seed ^ batch_idx.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (crate::data::splitmix64(&mut s) >> 1) as i64
}

pub struct Trainer {
    pub cfg: Config,
    pub device: Device,
    pub g_vs: VarStore,
    pub g_ema_vs: VarStore,
    pub d_vs: VarStore,
    pub g: Generator,
    pub g_ema: Generator,
    pub d: Discriminator,
    g_params: Vec<(String, Tensor)>,
    d_params: Vec<(String, Tensor)>,
    ema_params: Vec<(Tensor, Tensor)>,
    ema_buffers: Vec<(Tensor, Tensor)>,
    pub opt_g: Adam,
    pub opt_d: Adam,
    pub pl_mean: Tensor,
    pub state: TrainState,
    pub stats: StatSums,
    /// Per phase: some step since the last check had a non-finite value (CUDA; the CPU checks at once).
    pending_bad: Option<Tensor>,
    /// Fault injection for tests: poison this (minibatch, phase) once.
    pub inject_nan: Option<(u64, Phase)>,
    /// Seconds per phase since the last `take_phase_times` (host time; `sync_timing` makes it exact on CUDA).
    pub phase_secs: [f64; 4],
    pub sync_timing: bool,
    /// The dataset's labels (int64, on the device): conditional fakes draw their labels from it, so classes come
    /// in the dataset's proportions as in the official loop. None: uniform over `c_dim`.
    pub label_pool: Option<Tensor>,
}

/// The modulated-convolution form for training on `device` (measured: see BENCHMARKS.md).
pub fn modconv_for(cfg: &Config, device: Device) -> ModConv {
    match cfg.training.modconv.as_str() {
        "fused" => ModConv::Fused,
        "unfused" => ModConv::Unfused,
        _ => {
            if device.is_cuda() {
                ModConv::Fused
            } else {
                ModConv::Unfused
            }
        }
    }
}

impl Trainer {
    /// Fresh networks initialised from `training.seed` (G_ema starts as a copy of G).
    pub fn new(cfg: &Config, device: Device) -> Result<Trainer> {
        let t = &cfg.training;
        tch::manual_seed(step_seed(t.seed, u64::MAX) ^ 0x5eed);
        let g_vs = VarStore::new(device);
        let mut g = Generator::new(&g_vs.root(), &cfg.model);
        let d_vs = VarStore::new(device);
        let d = Discriminator::new(&d_vs.root(), &cfg.model);
        let mut g_ema_vs = VarStore::new(device);
        let mut g_ema = Generator::new(&g_ema_vs.root(), &cfg.model);
        let g_all: std::collections::BTreeMap<String, Tensor> = g_vs.variables().into_iter().collect();
        copy_into(&g_all, "", &mut g_ema_vs, "G_ema")?;
        let mode = modconv_for(cfg, device);
        g.modconv = mode;
        g_ema.modconv = mode;
        let (g_params, g_buffers) = split_vars(&g_vs);
        let (d_params, _) = split_vars(&d_vs);
        let (ema_p, ema_b) = split_vars(&g_ema_vs);
        set_trainable(&ema_p, false);
        let ema_params = ema_p.into_iter().zip(&g_params).map(|((_, e), (_, p))| (e, p.shallow_clone())).collect();
        // Of G's buffers only `w_avg` changes in training (noise_const and the FIR filters are fixed and were copied
        // above), so only it is copied after each step.
        let ema_buffers = ema_b
            .into_iter()
            .zip(&g_buffers)
            .filter(|((name, _), _)| name.ends_with("w_avg"))
            .map(|((_, e), (_, b))| (e, b.shallow_clone()))
            .collect();
        let adam = |lr| AdamParams { lr, beta1: t.adam_beta1, beta2: t.adam_beta2, eps: t.adam_eps };
        let opt_g = Adam::new(&g_params, adam(t.g_lr));
        let opt_d = Adam::new(&d_params, adam(t.d_lr));
        let state = TrainState {
            cur_nimg: 0,
            batch_idx: 0,
            cur_tick: 0,
            seed: t.seed,
            loader: LoaderState { epoch: 0, position: 0, seed: t.seed },
            lr_factor: 1.0,
            rollbacks: 0,
            opt_g_step: 0,
            opt_d_step: 0,
            best: None,
        };
        Ok(Trainer {
            cfg: cfg.clone(),
            device,
            g_vs,
            g_ema_vs,
            d_vs,
            g,
            g_ema,
            d,
            g_params,
            d_params,
            ema_params,
            ema_buffers,
            opt_g,
            opt_d,
            pl_mean: Tensor::zeros([], (Kind::Float, device)),
            state,
            stats: StatSums::default(),
            pending_bad: None,
            inject_nan: None,
            phase_secs: [0.0; 4],
            sync_timing: false,
            label_pool: None,
        })
    }

    /// Learning rates of G and D at the current kimg (schedules and the rollback factor; before the lazy ratio).
    pub fn learning_rates(&self) -> (f64, f64) {
        let t = &self.cfg.training;
        let kimg = self.state.cur_nimg as f64 / 1000.0;
        let f = self.state.lr_factor;
        (schedule_value(&t.g_lr_schedule, t.g_lr, kimg) * f, schedule_value(&t.d_lr_schedule, t.d_lr, kimg) * f)
    }

    pub fn r1_gamma(&self) -> f64 {
        let t = &self.cfg.training;
        schedule_value(&t.r1_gamma_schedule, t.r1_gamma, self.state.cur_nimg as f64 / 1000.0)
    }

    /// Which phases minibatch `batch_idx` runs.
    pub fn phases_at(cfg: &Config, batch_idx: u64) -> Vec<Phase> {
        let t = &cfg.training;
        let mut v = vec![Phase::Gmain];
        if t.pl_weight > 0.0 && batch_idx.is_multiple_of(t.g_reg_interval as u64) {
            v.push(Phase::Greg);
        }
        v.push(Phase::Dmain);
        if batch_idx.is_multiple_of(t.d_reg_interval as u64) {
            v.push(Phase::Dreg);
        }
        v
    }

    fn set_opt(opt: &mut Adam, lr: f64, interval: u32, t: &crate::config::TrainingConfig) {
        let ratio = interval as f64 / (interval as f64 + 1.0);
        opt.params = AdamParams {
            lr: lr * ratio,
            beta1: t.adam_beta1.powf(ratio),
            beta2: t.adam_beta2.powf(ratio),
            eps: t.adam_eps,
        };
    }

    /// `n` labels for generated images: drawn from the dataset's labels when known, else uniform over classes.
    pub fn gen_labels(&self, n: i64) -> Tensor {
        match &self.label_pool {
            Some(pool) => pool.index_select(0, &Tensor::randint(pool.size()[0], [n], (Kind::Int64, self.device))),
            None => Tensor::randint(self.cfg.model.c_dim as i64, [n], (Kind::Int64, self.device)),
        }
    }

    fn one_hot(&self, labels: &Tensor) -> Tensor {
        labels.to_device(self.device).one_hot(self.cfg.model.c_dim as i64).to_kind(Kind::Float)
    }

    /// Differentiates `out.loss` w.r.t. `params`, checks it, reports the stats, and updates with `opt`.
    fn apply(&mut self, phase: Phase, mut out: PhaseOut, is_g: bool) -> Result<()> {
        if self.inject_nan == Some((self.state.batch_idx, phase)) {
            self.inject_nan = None;
            out.loss = out.loss * f64::NAN;
        }
        let params: Vec<Tensor> =
            if is_g { &self.g_params } else { &self.d_params }.iter().map(|(_, p)| p.shallow_clone()).collect();
        let grads = Tensor::run_backward(&[&out.loss], &params, false, false);
        let sums: Vec<Tensor> = grads.iter().filter(|g| g.defined()).map(|g| g.sum(Kind::Float)).collect();
        let ok = out.loss.isfinite().logical_and(&Tensor::stack(&sums, 0).sum(Kind::Float).isfinite());
        if self.device.is_cuda() {
            let flags = self.pending_bad.take().unwrap_or_else(|| Tensor::zeros([4], (Kind::Bool, self.device)));
            let _ = flags.get(phase.index() as i64).logical_or_(&ok.logical_not());
            self.pending_bad = Some(flags);
        } else if ok.int64_value(&[]) == 0 {
            bail!(self.non_finite(phase));
        }
        for (name, v) in &out.stats {
            self.stats.add(name, v);
        }
        if is_g { &mut self.opt_g } else { &mut self.opt_d }.step(&grads);
        Ok(())
    }

    fn non_finite(&self, phase: Phase) -> NonFinite {
        NonFinite {
            phase: phase.name(),
            loss: loss_name(phase),
            batch_idx: self.state.batch_idx,
            kimg: self.state.cur_nimg as f64 / 1000.0,
        }
    }

    /// On CUDA, reports a non-finite value seen since the last call (one host sync; called at tick ends).
    pub fn check_pending(&mut self) -> Result<()> {
        if let Some(flags) = self.pending_bad.take() {
            let v: Vec<bool> = Vec::try_from(flags.to_device(Device::Cpu)).unwrap_or_default();
            if let Some(i) = v.iter().position(|&b| b) {
                bail!(self.non_finite(Phase::ALL[i]));
            }
        }
        Ok(())
    }

    fn timed<T>(&mut self, phase: Phase, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let clock = Clock::start();
        let r = f(self)?;
        if self.sync_timing {
            if let Device::Cuda(i) = self.device {
                tch::Cuda::synchronize(i as i64);
            }
        }
        self.phase_secs[phase.index()] += clock.secs();
        Ok(r)
    }

    /// One minibatch: `reals` uint8 NCHW (on any device), `labels` int64 [N] for conditional networks.
    pub fn step(&mut self, reals: &Tensor, labels: Option<&Tensor>) -> Result<()> {
        let t = self.cfg.training.clone();
        let batch = reals.size()[0];
        tch::manual_seed(step_seed(self.state.seed, self.state.batch_idx));
        let reals = reals.to_device(self.device).to_kind(Kind::Float) / 127.5 - 1.0;
        let c_dim = self.cfg.model.c_dim as i64;
        let real_c = labels.filter(|_| c_dim > 0).map(|l| self.one_hot(l));
        let z_all = Tensor::randn([4, batch, self.cfg.model.z_dim as i64], (Kind::Float, self.device));
        let gen_c_all = (c_dim > 0).then(|| self.one_hot(&self.gen_labels(4 * batch).view([4, batch])));
        let gen_c = |i: i64| gen_c_all.as_ref().map(|c| c.get(i));
        let (g_lr, d_lr) = self.learning_rates();
        let r1_gamma = self.r1_gamma();
        let mix = t.style_mixing_prob;
        for phase in Self::phases_at(&self.cfg, self.state.batch_idx) {
            let z = z_all.get(phase.index() as i64);
            let c = gen_c(phase.index() as i64);
            match phase {
                Phase::Gmain => self.timed(phase, |s| {
                    set_trainable(&s.d_params, false);
                    set_trainable(&s.g_params, true);
                    Self::set_opt(&mut s.opt_g, g_lr, t.g_reg_interval, &t);
                    let out = loss::phase_gmain(&s.g, &s.d, &z, c.as_ref(), mix);
                    s.apply(phase, out, true)
                })?,
                Phase::Greg => self.timed(phase, |s| {
                    let n = (batch / t.pl_batch_shrink as i64).max(1);
                    let c = c.as_ref().map(|c| c.narrow(0, 0, n));
                    let mut pl_mean = s.pl_mean.shallow_clone();
                    let out = loss::phase_greg(
                        &s.g,
                        &z.narrow(0, 0, n),
                        c.as_ref(),
                        mix,
                        &mut pl_mean,
                        t.pl_decay,
                        t.pl_weight,
                        t.g_reg_interval as f64,
                    );
                    s.apply(phase, out, true)
                })?,
                Phase::Dmain => self.timed(phase, |s| {
                    set_trainable(&s.g_params, false);
                    set_trainable(&s.d_params, true);
                    Self::set_opt(&mut s.opt_d, d_lr, t.d_reg_interval, &t);
                    let out = loss::phase_dmain(&s.g, &s.d, &z, c.as_ref(), &reals, real_c.as_ref(), mix);
                    s.apply(phase, out, false)
                })?,
                Phase::Dreg => self.timed(phase, |s| {
                    let out = loss::phase_dreg(&s.d, &reals, real_c.as_ref(), r1_gamma, t.d_reg_interval as f64);
                    s.apply(phase, out, false)
                })?,
            }
        }
        set_trainable(&self.g_params, false);
        set_trainable(&self.d_params, false);
        let beta = ema::ema_beta(batch as u32, t.ema_kimg, t.ema_rampup, self.state.cur_nimg);
        ema::update(&self.ema_params, &self.ema_buffers, beta);
        self.state.cur_nimg += batch as u64;
        self.state.batch_idx += 1;
        Ok(())
    }

    /// Saves a resumable snapshot (the state's optimizer steps are filled in here).
    pub fn save(&mut self, path: &Path, dataset: &str) -> Result<()> {
        self.state.opt_g_step = self.opt_g.step;
        self.state.opt_d_step = self.opt_d.step;
        let parts = Parts {
            g: &self.g_vs,
            g_ema: &self.g_ema_vs,
            d: &self.d_vs,
            opt_g: &self.opt_g,
            opt_d: &self.opt_d,
            pl_mean: &self.pl_mean,
        };
        snapshot::save(path, &self.cfg, &parts, &self.state, dataset)
    }

    /// Restores networks, optimizers, `pl_mean` and the loop state from a loaded snapshot.
    pub fn restore(&mut self, ckpt: &Checkpoint, state: &TrainState) -> Result<()> {
        if ckpt.config.model != self.cfg.model {
            // Name the first key that differs (an absent optional key shows as "absent").
            let table = |m: &crate::config::ModelConfig| toml::Table::try_from(m).unwrap_or_default();
            let (snap, cfg) = (table(&ckpt.config.model), table(&self.cfg.model));
            let shown = |t: &toml::Table, k: &str| t.get(k).map_or("absent".to_string(), |v| v.to_string());
            let key = snap.keys().chain(cfg.keys()).find(|k| snap.get(*k) != cfg.get(*k)).cloned().unwrap_or_default();
            bail!(
                "the snapshot's model.{key} = {} differs from the config's {} (resume with the config it was trained \
                 with)",
                shown(&snap, &key),
                shown(&cfg, &key)
            );
        }
        ckpt.load_into("G", &mut self.g_vs)?;
        ckpt.load_into("G_ema", &mut self.g_ema_vs)?;
        ckpt.load_into("D", &mut self.d_vs)?;
        self.opt_g.load_state(&ckpt.tensors, "opt_G", state.opt_g_step)?;
        self.opt_d.load_state(&ckpt.tensors, "opt_D", state.opt_d_step)?;
        let pl = ckpt.tensors.get("pl_mean").ok_or_else(|| anyhow::anyhow!("snapshot lacks pl_mean"))?;
        tch::no_grad(|| self.pl_mean.copy_(&pl.to_kind(Kind::Float).to_device(self.device).reshape([])));
        self.state = state.clone();
        self.stats = StatSums::default();
        self.pending_bad = None;
        Ok(())
    }

    /// The fixed-seed grid of G_ema (seeds 0..grid_w*grid_h, z as the official tools draw it, const noise).
    pub fn fakes_grid(&self) -> Result<ImageU8> {
        let l = &self.cfg.logging;
        let n = (l.grid_w * l.grid_h) as usize;
        let z_dim = self.cfg.model.z_dim as i64;
        let c_dim = self.cfg.model.c_dim as i64;
        let mut images = Vec::with_capacity(n);
        let chunk = (self.cfg.training.batch as usize).max(1);
        for start in (0..n).step_by(chunk) {
            let seeds: Vec<u32> = (start..(start + chunk).min(n)).map(|s| s as u32).collect();
            let z = Tensor::cat(&seeds.iter().map(|&s| crate::generate::z_for_seed(s, z_dim)).collect::<Vec<_>>(), 0)
                .to_device(self.device);
            let c = (c_dim > 0).then(|| {
                let l: Vec<i64> = seeds.iter().map(|&s| s as i64 % c_dim).collect();
                self.one_hot(&Tensor::from_slice(&l))
            });
            let img = tch::no_grad(|| self.g_ema.forward(&z, c.as_ref(), 1.0, NoiseMode::Const));
            let u8s = to_uint8_nhwc(&img);
            for i in 0..seeds.len() {
                images.push(ImageU8::from_nhwc(&u8s, i as i64));
            }
        }
        crate::image_io::grid(&images, l.grid_w as usize)
    }

    /// Number of trainable parameters of G and D.
    pub fn param_counts(&self) -> (i64, i64) {
        let count = |v: &[(String, Tensor)]| v.iter().map(|(_, t)| t.numel() as i64).sum();
        (count(&self.g_params), count(&self.d_params))
    }
}
