//! One training minibatch as the official `training_loop.py` runs it: phases Gmain, Greg, Dmain, Dreg (the
//! regularisation phases every `g_reg_interval` / `d_reg_interval` minibatches, with Adam's learning rate and betas
//! scaled by interval / (interval + 1)), or Gboth / Dboth when an interval is 0 (no lazy regularisation), then the
//! G_ema update. Owns the networks, optimizers and `pl_mean`.

mod state;

use super::ada::Ada;
use super::adam::{Adam, AdamParams};
use super::augment::{self, AugmentPipe};
use super::log::StatSums;
use super::loss::{Phase, PhaseInputs, PhaseOut, StyleGan2Loss};
use super::snapshot::TrainState;
use super::{ema, Clock};
use crate::config::{schedule_value, AugmentMode, Config, ModConvSetting, NanPolicy};
use crate::data::loader::LoaderState;
use crate::dist::Dist;
use crate::image_io::{to_uint8_nhwc, ImageU8};
use crate::model::checkpoint::copy_into;
use crate::model::{Discriminator, Generator, NoiseMode};
use crate::nn::ModConv;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
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

/// The pipe of `[augment]`: the preset with the configured multipliers replacing its own; None without
/// augmentation.
pub fn augment_pipe(cfg: &Config) -> Result<Option<AugmentPipe>> {
    let a = &cfg.augment;
    if a.mode == AugmentMode::Noaug {
        return Ok(None);
    }
    let mut spec = serde_json::to_value(augment::preset(&a.pipe)?)?;
    for (kind, m) in &a.multipliers {
        spec[kind.as_str()] = serde_json::json!(m);
    }
    let spec: augment::AugmentSpec = serde_json::from_value(spec).context("augment.multipliers")?;
    spec.validate()?;
    Ok(Some(AugmentPipe::new(spec, a.p)))
}

/// The seed of minibatch `batch_idx`'s random draws: every draw of a step is a function of (seed, index), so a
/// resumed run continues exactly. Rank `r` of `w` data-parallel processes draws from `seed * w + r`, as the official.
pub fn step_seed(seed: u64, batch_idx: u64) -> i64 {
    let mut s = seed ^ batch_idx.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (crate::rng::splitmix64(&mut s) >> 1) as i64
}

/// A step's random draws given from outside (tests that compare runs feed both the same): latents and one-hot
/// labels per phase of [`Trainer::run_phases`] ([phases, N, z_dim], [phases, N, c_dim]) and the path-length noise
/// ([N / pl_batch_shrink, C, H, W]).
pub struct StepDraws {
    pub z: Tensor,
    pub gen_c: Option<Tensor>,
    pub pl_noise: Option<Tensor>,
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
    /// Per phase (int64 [6], on the device): steps since the last check whose loss or gradient was not finite.
    nonfinite: Option<Tensor>,
    /// Fault injection for tests: poison this (minibatch, phase) once.
    pub inject_nan: Option<(u64, Phase)>,
    /// Seconds per phase since the last `take_phase_times` (host time; `sync_timing` makes it exact on CUDA).
    pub phase_secs: [f64; 6],
    pub sync_timing: bool,
    /// The augmentation pipe D sees its inputs through (`[augment]` mode fixed or ada); its `p` follows
    /// `state.augment_p`.
    pub augment: Option<AugmentPipe>,
    /// ADA: this rank's sum of sign(D(real)) on the device and its count since the last adjustment or snapshot
    /// (`state.ada_signs` holds what a resumed snapshot brought, already summed over ranks).
    ada_acc: Option<Tensor>,
    ada_count: f64,
    /// The data-parallel group (a group of one by default): gradients, `pl_mean`, `w_avg`, statistics and ADA's
    /// signs are combined across it.
    pub dist: Arc<Dist>,
    /// G's noise inputs in training (random; tests fix them to compare runs).
    pub noise_mode: NoiseMode,
    /// The dataset's labels (int64, on the device): conditional fakes draw their labels from it, so classes come
    /// in the dataset's proportions as in the official loop. None: uniform over `c_dim`.
    pub label_pool: Option<Tensor>,
}

/// The modulated-convolution form for training on `device` (measured: see BENCHMARKS.md).
pub fn modconv_for(cfg: &Config, device: Device) -> ModConv {
    match cfg.training.modconv {
        ModConvSetting::Fused => ModConv::Fused,
        ModConvSetting::Unfused => ModConv::Unfused,
        ModConvSetting::Auto => {
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
        g.modconv = Some(mode);
        g_ema.modconv = Some(mode);
        let (g_params, g_buffers) = split_vars(&g_vs);
        let (d_params, _) = split_vars(&d_vs);
        // Freeze-D: frozen layers leave D's parameter list, so they get no gradient and no Adam state.
        let frozen: Vec<String> =
            cfg.model.d_layer_order().into_iter().take(t.freeze_d as usize).map(|l| format!("{l}.")).collect();
        let (frozen_params, d_params): (Named, Named) =
            d_params.into_iter().partition(|(n, _)| frozen.iter().any(|f| n.starts_with(f.as_str())));
        set_trainable(&frozen_params, false);
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
            augment_p: if cfg.augment.mode == AugmentMode::Noaug { 0.0 } else { cfg.augment.p },
            ada_signs: [0.0; 2],
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
            nonfinite: None,
            inject_nan: None,
            phase_secs: [0.0; 6],
            sync_timing: false,
            augment: augment_pipe(cfg)?,
            ada_acc: None,
            ada_count: 0.0,
            dist: Arc::new(Dist::single()),
            noise_mode: NoiseMode::Random,
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

    /// The official phase list of a run (`training_loop.py`): per network a main and a regularisation phase, or one
    /// `*both` phase when its interval is 0. Each phase draws its own latents (row `i` of the minibatch's draw).
    pub fn run_phases(cfg: &Config) -> Vec<Phase> {
        let t = &cfg.training;
        let mut v = vec![];
        for (interval, lazy, both) in [
            (t.g_reg_interval, [Phase::Gmain, Phase::Greg], Phase::Gboth),
            (t.d_reg_interval, [Phase::Dmain, Phase::Dreg], Phase::Dboth),
        ] {
            if interval == 0 {
                v.push(both);
            } else {
                v.extend(lazy);
            }
        }
        v
    }

    /// The loss settings at the current kimg (the R1 weight follows its schedule).
    pub fn loss_settings(&self) -> StyleGan2Loss {
        let t = &self.cfg.training;
        StyleGan2Loss {
            style_mixing_prob: t.style_mixing_prob,
            r1_gamma: self.r1_gamma(),
            pl_batch_shrink: t.pl_batch_shrink as i64,
            pl_decay: t.pl_decay,
            pl_weight: t.pl_weight,
        }
    }

    /// The phases minibatch `batch_idx` runs with `loss`: those whose interval divides it and that have something to
    /// do (no Greg when pl_weight is 0, no Dreg when r1_gamma is 0), each with its index in [`Trainer::run_phases`].
    pub fn phases_at(cfg: &Config, loss: &StyleGan2Loss, batch_idx: u64) -> Vec<(usize, Phase)> {
        let t = &cfg.training;
        Self::run_phases(cfg)
            .into_iter()
            .enumerate()
            .filter(|&(_, p)| {
                let interval = match p {
                    Phase::Greg => t.g_reg_interval,
                    Phase::Dreg => t.d_reg_interval,
                    _ => 1,
                };
                batch_idx.is_multiple_of(interval as u64) && loss.runs(p)
            })
            .collect()
    }

    /// The lazy-regularisation ratio interval / (interval + 1) applied to lr and betas (1 without lazy
    /// regularisation).
    fn set_opt(opt: &mut Adam, lr: f64, interval: u32, t: &crate::config::TrainingConfig) {
        let ratio = if interval == 0 { 1.0 } else { interval as f64 / (interval as f64 + 1.0) };
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

    /// Differentiates `out.loss` w.r.t. the phase's parameters, applies the non-finite policy, reports the stats,
    /// and updates with the phase's optimizer.
    fn apply(&mut self, phase: Phase, mut out: PhaseOut) -> Result<()> {
        if self.inject_nan == Some((self.state.batch_idx, phase)) {
            self.inject_nan = None;
            out.loss = out.loss * f64::NAN;
        }
        let is_g = phase.is_g();
        let params: Vec<Tensor> =
            if is_g { &self.g_params } else { &self.d_params }.iter().map(|(_, p)| p.shallow_clone()).collect();
        let mut grads = Tensor::run_backward(&[&out.loss], &params, false, false);
        let sums: Vec<Tensor> = grads.iter().filter(|g| g.defined()).map(|g| g.sum(Kind::Float)).collect();
        let mut ok = out.loss.isfinite().logical_and(&Tensor::stack(&sums, 0).sum(Kind::Float).isfinite());
        if self.dist.world > 1 {
            // Averaged over ranks before the policy acts, as the official (all_reduce, divide, nan_to_num); the bad
            // flags travel with the gradients, so every rank takes the same decision.
            let bad = ok.logical_not().to_kind(Kind::Float).reshape([1]);
            let mut all: Vec<&Tensor> = grads.iter().filter(|g| g.defined()).collect();
            all.push(&bad);
            self.dist.mean_(&all)?;
            ok = bad.get(0).eq(0.0);
        }
        let counts = self.nonfinite.take().unwrap_or_else(|| Tensor::zeros([6], (Kind::Int64, self.device)));
        let _ = counts.get(phase.index() as i64).g_add_(&ok.logical_not());
        let mut keep = None;
        match self.cfg.training.nan_policy {
            NanPolicy::Official => {
                for g in grads.iter_mut().filter(|g| g.defined()) {
                    let _ = g.nan_to_num_(0.0, 1e5, -1e5);
                }
            }
            // The CPU has the flag at once; on CUDA reading it would wait for the device, so the step is made
            // conditional there instead and the run stops at the tick end.
            _ if !self.device.is_cuda() => {
                if ok.int64_value(&[]) == 0 {
                    self.nonfinite = Some(counts);
                    bail!(self.non_finite(phase));
                }
            }
            _ => keep = Some(counts.sum(Kind::Int64).eq(0)),
        }
        self.nonfinite = Some(counts);
        for (name, v) in &out.stats {
            self.stats.add(name, v);
            if *name == "Loss/signs/real" && self.cfg.augment.mode == AugmentMode::Ada {
                let sum = v.sum(Kind::Double);
                self.ada_acc = Some(match self.ada_acc.take() {
                    Some(acc) => acc + sum,
                    None => sum,
                });
                self.ada_count += v.numel() as f64;
            }
        }
        if is_g { &mut self.opt_g } else { &mut self.opt_d }.step_if(&grads, keep.as_ref());
        Ok(())
    }

    fn non_finite(&self, phase: Phase) -> NonFinite {
        NonFinite {
            phase: phase.name(),
            loss: phase.loss_name(),
            batch_idx: self.state.batch_idx,
            kimg: self.state.cur_nimg as f64 / 1000.0,
        }
    }

    /// Steps per phase with a non-finite loss or gradient since the last call (one host sync; called at tick ends).
    pub fn take_nonfinite(&mut self) -> Vec<(Phase, u64)> {
        let Some(counts) = self.nonfinite.take() else { return vec![] };
        let v: Vec<i64> = Vec::try_from(counts.to_device(Device::Cpu)).unwrap_or_default();
        Phase::ALL.iter().zip(v).filter(|(_, n)| *n > 0).map(|(p, n)| (*p, n as u64)).collect()
    }

    /// Under the stop and rollback policies, the error for a non-finite value since the last check (on CUDA, where
    /// it is only known at tick ends; the CPU fails in the step itself). Under the official policy, Ok with the
    /// counts, for the log.
    pub fn check_nonfinite(&mut self) -> Result<Vec<(Phase, u64)>> {
        let counts = self.take_nonfinite();
        if self.cfg.training.nan_policy != NanPolicy::Official {
            if let Some((p, _)) = counts.first() {
                bail!(self.non_finite(*p));
            }
        }
        Ok(counts)
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

    /// One minibatch: `reals` uint8 NCHW (on any device; this rank's share of the global batch), `labels` int64
    /// [N] for conditional networks.
    pub fn step(&mut self, reals: &Tensor, labels: Option<&Tensor>) -> Result<()> {
        self.step_with(reals, labels, None)
    }

    /// [`Trainer::step`] with the step's random draws given (`draws`) instead of drawn from the step's seed.
    pub fn step_with(&mut self, reals: &Tensor, labels: Option<&Tensor>, draws: Option<&StepDraws>) -> Result<()> {
        let t = self.cfg.training.clone();
        let local = reals.size()[0];
        // The global batch: what all ranks together took (kimg, G_ema's and ADA's rates count it).
        let batch = local * self.dist.world as i64;
        let seed = self.state.seed.wrapping_mul(self.dist.world as u64).wrapping_add(self.dist.rank as u64);
        tch::manual_seed(step_seed(seed, self.state.batch_idx));
        let reals = reals.to_device(self.device).to_kind(Kind::Float) / 127.5 - 1.0;
        let c_dim = self.cfg.model.c_dim as i64;
        let real_c = labels.filter(|_| c_dim > 0).map(|l| self.one_hot(l));
        let num_phases = Self::run_phases(&self.cfg).len() as i64;
        let (z_all, gen_c_all) = match draws {
            Some(d) => (d.z.to_device(self.device), d.gen_c.as_ref().map(|c| c.to_device(self.device))),
            None => {
                let z = Tensor::randn([num_phases, local, self.cfg.model.z_dim as i64], (Kind::Float, self.device));
                let c =
                    (c_dim > 0).then(|| self.one_hot(&self.gen_labels(num_phases * local).view([num_phases, local])));
                (z, c)
            }
        };
        let pl_noise = draws.and_then(|d| d.pl_noise.as_ref()).map(|n| n.to_device(self.device));
        let dist = self.dist.clone();
        let (g_lr, d_lr) = self.learning_rates();
        let loss = self.loss_settings();
        if let Some(pipe) = self.augment.as_mut() {
            pipe.p = self.state.augment_p;
        }
        let augment = self.augment.clone();
        for (i, phase) in Self::phases_at(&self.cfg, &loss, self.state.batch_idx) {
            let z = z_all.get(i as i64);
            let gen_c = gen_c_all.as_ref().map(|c| c.get(i as i64));
            let x = PhaseInputs {
                z: &z,
                gen_c: gen_c.as_ref(),
                reals: &reals,
                real_c: real_c.as_ref(),
                augment: augment.as_ref(),
                noise: self.noise_mode,
                pl_noise: pl_noise.as_ref(),
                dist: Some(&dist),
            };
            self.timed(phase, |s| {
                let (own, other) = if phase.is_g() { (&s.g_params, &s.d_params) } else { (&s.d_params, &s.g_params) };
                set_trainable(other, false);
                set_trainable(own, true);
                let (interval, gain) = match phase {
                    Phase::Greg => (t.g_reg_interval, t.g_reg_interval as f64),
                    Phase::Dreg => (t.d_reg_interval, t.d_reg_interval as f64),
                    Phase::Gmain | Phase::Gboth => (t.g_reg_interval, 1.0),
                    Phase::Dmain | Phase::Dboth => (t.d_reg_interval, 1.0),
                };
                if phase.is_g() {
                    Self::set_opt(&mut s.opt_g, g_lr, interval, &t);
                } else {
                    Self::set_opt(&mut s.opt_d, d_lr, interval, &t);
                }
                let mut pl_mean = s.pl_mean.shallow_clone();
                // `cpu_bf16` speeds the main phases only: the regularisers differentiate through a gradient, and
                // bf16 convolutions there move some weights' updates by their own size (tests/train_precision.rs).
                let bf16 = crate::nn::ops::cpu_bf16() && matches!(phase, Phase::Gmain | Phase::Dmain);
                let out =
                    crate::nn::ops::with_cpu_bf16(bf16, || loss.phase_loss(phase, &s.g, &s.d, &x, &mut pl_mean, gain));
                match out? {
                    Some(out) => s.apply(phase, out),
                    None => Ok(()),
                }
            })?;
        }
        set_trainable(&self.g_params, false);
        set_trainable(&self.d_params, false);
        // Each rank tracked w_avg on its own share; the lerps are linear, so their mean is the whole batch's.
        let w_avg: Vec<&Tensor> = self.ema_buffers.iter().map(|(_, b)| b).collect();
        self.dist.mean_(&w_avg)?;
        let beta = ema::ema_beta(batch as u32, t.ema_kimg, t.ema_rampup, self.state.cur_nimg);
        ema::update(&self.ema_params, &self.ema_buffers, beta);
        let ada = Ada::new(&self.cfg.augment, batch as u32);
        if self.cfg.augment.mode == AugmentMode::Ada && ada.due(self.state.batch_idx) {
            let signs = self.take_ada_signs()?;
            self.state.augment_p = ada.adjust(self.state.augment_p, signs);
        }
        self.state.cur_nimg += batch as u64;
        self.state.batch_idx += 1;
        Ok(())
    }

    /// ADA's signs since the last adjustment (summed over ranks, plus a resumed snapshot's), which then start over.
    /// A collective: every rank calls it at the same point.
    fn take_ada_signs(&mut self) -> Result<[f64; 2]> {
        let mut s = std::mem::take(&mut self.state.ada_signs);
        let sum = self.ada_acc.take().map_or(0.0, |acc| acc.double_value(&[]));
        let local = Tensor::from_slice(&[sum, std::mem::take(&mut self.ada_count)]);
        self.dist.sum_(&[&local])?;
        s[0] += local.double_value(&[0]);
        s[1] += local.double_value(&[1]);
        Ok(s)
    }

    /// The means of the statistics since the last call, over every rank's samples (a collective), then starts over.
    pub fn take_stat_means(&mut self) -> Result<BTreeMap<String, f64>> {
        self.stats.take_means_across(&self.dist)
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
            // Generated as `sg2 generate` would: direct convolutions (`training.cpu_winograd` is for the steps).
            let img = crate::nn::ops::with_cpu_winograd(false, || {
                tch::no_grad(|| self.g_ema.forward(&z, c.as_ref(), 1.0, NoiseMode::Const))
            });
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
