//! `sg2 train`: the run folder, the loader, ticks, snapshots, fakes grids, metrics and rollback around
//! [`Trainer::step`]. Tick and snapshot timing follow the official `training_loop.py` (tick 0 ends after the first
//! minibatch; a snapshot and a fakes grid are always written when training ends).

use super::log::{cpu_mem_gib, gpu_mem_gib, is_jump, tick_line, RunLog};
use super::loss::Phase;
use super::snapshot::{self, TrainState};
use super::trainer::{NonFinite, Trainer};
use super::Clock;
use crate::config::Config;
use crate::data::loader::{Loader, LoaderOptions};
use crate::data::Dataset;
use crate::image_io::ImageU8;
use crate::model::Generator;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Tensor};

/// Computes metrics of G_ema at a snapshot (the snapshot's path is given too): (name, value) pairs.
pub type MetricsFn = Box<dyn FnMut(&Generator, &Path) -> Result<Vec<(String, f64)>>>;

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
    pub config: Config,
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
}

impl TrainOptions {
    pub fn new(config: Config, config_name: &str, data: &Path, outdir: &Path) -> TrainOptions {
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
}

/// Opens the dataset and checks it fits the network.
pub fn open_dataset(data: &Path, cfg: &Config) -> Result<Dataset> {
    if !data.exists() {
        bail!("--data {}: no such folder", data.display());
    }
    let ds = Dataset::open(data).with_context(|| format!("--data {}", data.display()))?;
    let res = cfg.model.resolution as usize;
    if ds.count == 0 {
        bail!("--data {}: the dataset is empty", data.display());
    }
    if !ds.has_level(res) {
        bail!(
            "--data {}: no {res}x{res} level (levels {:?}); set model.resolution or --resolution to one of them",
            data.display(),
            ds.levels
        );
    }
    if ds.channels != cfg.model.channels as usize {
        bail!(
            "--data {}: images have {} channel(s) but model.channels = {}",
            data.display(),
            ds.channels,
            cfg.model.channels
        );
    }
    if cfg.model.c_dim > 0 && ds.num_classes != cfg.model.c_dim {
        bail!(
            "--data {}: {} classes but model.c_dim = {} (a conditional network needs a labelled dataset)",
            data.display(),
            ds.num_classes,
            cfg.model.c_dim
        );
    }
    Ok(ds)
}

fn dataset_name(data: &Path) -> String {
    let p = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into())
}

/// The first grid_w x grid_h records at the training resolution.
fn reals_grid(ds: &Dataset, cfg: &Config) -> Result<Option<ImageU8>> {
    let c = ds.channels as u32;
    if c != 1 && c != 3 {
        return Ok(None);
    }
    let res = cfg.model.resolution as usize;
    let n = ((cfg.logging.grid_w * cfg.logging.grid_h) as u64).min(ds.count);
    let images: Vec<ImageU8> = (0..n)
        .map(|i| {
            let chw = ds.record(res, i);
            let mut data = vec![0u8; chw.len()];
            for (k, v) in chw.iter().enumerate() {
                let (ch, px) = (k / (res * res), k % (res * res));
                data[px * c as usize + ch] = *v;
            }
            ImageU8 { width: res as u32, height: res as u32, channels: c, data }
        })
        .collect();
    Ok(Some(crate::image_io::grid(&images, cfg.logging.grid_w as usize)?))
}

fn save_grid(log: &mut RunLog, img: &ImageU8, path: &Path, cur_nimg: u64) -> Result<()> {
    img.save_png(path)?;
    log.tb.image("fakes", img, cur_nimg as i64)
}

/// Trains as `opts` says; returns where the run went.
pub fn train(mut opts: TrainOptions) -> Result<TrainReport> {
    let cfg = opts.config.clone();
    let ds = open_dataset(&opts.data, &cfg)?;
    let desc = format!("{}-{}", opts.config_name, dataset_name(&opts.data));
    let total_nimg = (cfg.training.total_kimg * 1000.0).round().max(1.0) as u64;

    // Where to start: a snapshot (and its folder for --resume latest) or nothing.
    let resume: Option<(Option<PathBuf>, PathBuf, TrainState)> = match &opts.resume {
        None => None,
        Some(Resume::Latest) => match snapshot::find_latest(&opts.outdir, &desc)? {
            Some((dir, snap, st)) => Some((Some(dir), snap, st)),
            None => bail!("--resume latest: no complete snapshot of a '{desc}' run under {}", opts.outdir.display()),
        },
        Some(Resume::Path(p)) => {
            let st = snapshot::load_state(p).with_context(|| format!("--resume {}", p.display()))?;
            Some((None, p.clone(), st))
        }
    };
    if let Some((_, snap, st)) = &resume {
        if st.cur_nimg >= total_nimg {
            let msg = format!(
                "{}: already trained to {:.3} kimg (total_kimg {}): nothing to do",
                snap.display(),
                st.cur_nimg as f64 / 1000.0,
                cfg.training.total_kimg
            );
            if opts.echo {
                println!("{msg}");
            }
            return Ok(TrainReport { run_dir: None, snapshot: None, cur_nimg: st.cur_nimg, rollbacks: st.rollbacks });
        }
    }

    let mut trainer = Trainer::new(&cfg, opts.device)?;
    trainer.inject_nan = opts.inject_nan;
    if cfg.model.c_dim > 0 {
        let labels: Vec<i64> = (0..ds.count).map(|i| ds.label(i).unwrap_or(0) as i64).collect();
        trainer.label_pool = Some(Tensor::from_slice(&labels).to_device(opts.device));
    }
    if let Some((_, snap, st)) = &resume {
        let (ckpt, _) = snapshot::load(snap)?;
        // The config given now governs (e.g. a longer total_kimg); the seed and position come from the snapshot.
        trainer.restore(&ckpt, st).with_context(|| format!("--resume {}", snap.display()))?;
    }
    let run_dir = match resume.as_ref().and_then(|r| r.0.clone()) {
        Some(dir) => dir,
        None => snapshot::new_run_dir(&opts.outdir, &desc)?,
    };
    crate::util::write_bytes_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes())?;
    let mut log = RunLog::open(&run_dir, total_nimg, opts.echo)?;
    let (gp, dp) = trainer.param_counts();
    log.line(&format!("run folder {}", run_dir.display()))?;
    log.line(&format!(
        "dataset {} ({} images, {}x{}, {} channel(s)); device {}; G {gp} parameters, D {dp}",
        opts.data.display(),
        ds.count,
        cfg.model.resolution,
        cfg.model.resolution,
        ds.channels,
        crate::device::describe(opts.device)
    ))?;
    if let Some((_, snap, st)) = &resume {
        log.line(&format!("resuming from {} at kimg {:.3}", snap.display(), st.cur_nimg as f64 / 1000.0))?;
    }
    log.line(&format!("training for {} kimg...", cfg.training.total_kimg))?;
    let fingerprint = ds.fingerprint();
    let ds = Arc::new(ds);
    let mut lo = LoaderOptions::new(cfg.training.batch as usize, cfg.model.resolution as usize);
    lo.seed = cfg.training.seed;
    lo.mirror = cfg.training.mirror;
    let mut loader = Loader::resume(ds.clone(), lo.clone(), opts.device, trainer.state.loader)?;

    if !run_dir.join("reals.png").exists() {
        if let Some(img) = reals_grid(&ds, &cfg)? {
            img.save_png(run_dir.join("reals.png"))?;
        }
    }
    if !run_dir.join("fakes_init.png").exists() {
        let img = trainer.fakes_grid()?;
        save_grid(&mut log, &img, &run_dir.join("fakes_init.png"), trainer.state.cur_nimg)?;
    }

    let start = Clock::start();
    let mut tick_clock = Clock::start();
    let mut tick_start_nimg = trainer.state.cur_nimg;
    let mut maintenance = 0.0;
    let mut prev_losses: BTreeMap<String, f64> = BTreeMap::new();
    let mut last_snapshot = None;
    let mut rollbacks_in_a_row = 0;
    loop {
        let (images, labels) = loader.next_batch()?;
        let mut result = trainer.step(&images, labels.as_ref());
        trainer.state.loader = loader.state();
        let cur = trainer.state.cur_nimg;
        let done = cur >= total_nimg;
        let tick_end =
            done || trainer.state.cur_tick == 0 || cur >= tick_start_nimg + (cfg.logging.tick_kimg * 1000.0) as u64;
        if result.is_ok() && tick_end {
            result = trainer.check_pending();
        }
        if let Err(e) = result {
            let Some(nf) = e.downcast_ref::<NonFinite>().cloned() else { return Err(e) };
            let what = format!("tick {}: {nf}", trainer.state.cur_tick);
            log.line(&format!("error: {what}"))?;
            let latest = snapshot::read_latest(&run_dir);
            let max = cfg.training.max_rollbacks;
            match latest {
                Some(snap) if cfg.training.rollback && rollbacks_in_a_row < max => {
                    let factor = trainer.state.lr_factor * cfg.training.rollback_lr_factor;
                    let rollbacks = trainer.state.rollbacks + 1;
                    let (ckpt, st) = snapshot::load(&snap)?;
                    trainer.restore(&ckpt, &st)?;
                    trainer.state.lr_factor = factor;
                    trainer.state.rollbacks = rollbacks;
                    rollbacks_in_a_row += 1;
                    loader = Loader::resume(ds.clone(), lo.clone(), opts.device, st.loader)?;
                    tick_start_nimg = trainer.state.cur_nimg;
                    tick_clock = Clock::start();
                    log.line(&format!(
                        "rollback: reloaded {} (kimg {:.3}); learning rates x{} (factor now {factor})",
                        snap.display(),
                        st.cur_nimg as f64 / 1000.0,
                        cfg.training.rollback_lr_factor
                    ))?;
                    log.tb.scalar("Train/rollback", rollbacks as f64, trainer.state.cur_nimg as i64)?;
                    continue;
                }
                Some(_) if cfg.training.rollback => {
                    bail!("{what}; gave up after {max} rollbacks in a row")
                }
                None if cfg.training.rollback => bail!("{what}; no snapshot to roll back to"),
                _ => bail!("{what} (set training.rollback = true to reload the last snapshot and continue)"),
            }
        }
        log.progress(cur);
        if !tick_end {
            continue;
        }

        // Tick boundary: the only place values come back to the host.
        let tick_secs = tick_clock.secs();
        let maint_clock = Clock::start();
        let mut values = trainer.stats.take_means();
        let tick = trainer.state.cur_tick;
        let tick_kimg = (cur - tick_start_nimg) as f64 / 1000.0;
        let sec_per_kimg = tick_secs / tick_kimg.max(1e-9);
        let (g_lr, d_lr) = trainer.learning_rates();
        let cpumem = cpu_mem_gib();
        let gpumem = gpu_mem_gib(trainer.device);
        if let Some(g) = gpumem {
            values.insert("Resources/gpu_mem_gb".into(), g);
        }
        for (k, v) in [
            ("Progress/tick", tick as f64),
            ("Progress/kimg", cur as f64 / 1000.0),
            ("Timing/total_sec", start.secs()),
            ("Timing/sec_per_tick", tick_secs),
            ("Timing/sec_per_kimg", sec_per_kimg),
            ("Timing/maintenance_sec", maintenance),
            ("Resources/cpu_mem_gb", cpumem),
            ("TrainG/learning_rate", g_lr),
            ("TrainD/learning_rate", d_lr),
            ("Train/r1_gamma", trainer.r1_gamma()),
            ("Train/lr_factor", trainer.state.lr_factor),
        ] {
            values.insert(k.into(), v);
        }
        log.line(&tick_line(tick, cur, start.secs(), tick_secs, sec_per_kimg, maintenance, cpumem, gpumem))?;
        let mut flagged = 0.0;
        for key in ["Loss/D/loss", "Loss/G/loss"] {
            if let (Some(p), Some(n)) = (prev_losses.get(key), values.get(key)) {
                if is_jump(*p, *n, cfg.logging.collapse_factor) {
                    flagged = 1.0;
                    log.line(&format!(
                        "warning: sharp jump in {key}: {p:.4} -> {n:.4} at tick {tick} (possible collapse)"
                    ))?;
                }
            }
            if let Some(n) = values.get(key) {
                prev_losses.insert(key.to_string(), *n);
            }
        }
        values.insert("Train/collapse_flag".into(), flagged);

        let every = |n: u32| done || (n > 0 && tick.is_multiple_of(n as u64));
        if every(cfg.logging.image_snapshot_ticks) {
            let img = trainer.fakes_grid()?;
            save_grid(&mut log, &img, &run_dir.join(format!("fakes{}.png", snapshot::label(cur))), cur)?;
        }
        if every(cfg.logging.snapshot_ticks) {
            let name = snapshot::snapshot_name(cur);
            let path = run_dir.join(&name);
            trainer.save(&path, &fingerprint)?;
            snapshot::write_latest(&run_dir, &name)?;
            rollbacks_in_a_row = 0;
            log.line(&format!("snapshot {}", path.display()))?;
            if let (Some(f), false) = (opts.metrics.as_mut(), cfg.logging.metrics.is_empty()) {
                for (metric, value) in f(&trainer.g_ema, &path)? {
                    log.line(&format!("{} {metric} {value:.4}", name.trim_end_matches(".safetensors")))?;
                    values.insert(format!("Metrics/{metric}"), value);
                    let higher_better = metric.starts_with("is") || metric.starts_with("pr");
                    let better = match &trainer.state.best {
                        None => true,
                        Some(b) if b.metric == metric => {
                            if higher_better {
                                value > b.value
                            } else {
                                value < b.value
                            }
                        }
                        Some(_) => false,
                    };
                    if better {
                        trainer.state.best =
                            Some(snapshot::Best { metric: metric.clone(), value, snapshot: name.clone() });
                    }
                }
            }
            let best = trainer.state.best.as_ref().map(|b| b.snapshot.clone());
            for p in snapshot::retain(&run_dir, cfg.logging.keep_snapshots, best.as_deref())? {
                log.line(&format!("removed old snapshot {}", p.display()))?;
            }
            last_snapshot = Some(path);
        }
        log.record(cur, &values)?;
        trainer.state.cur_tick += 1;
        tick_start_nimg = cur;
        maintenance = maint_clock.secs();
        tick_clock = Clock::start();
        if done {
            break;
        }
    }
    log.finish_progress();
    log.line("Exiting...")?;
    Ok(TrainReport {
        run_dir: Some(run_dir),
        snapshot: last_snapshot,
        cur_nimg: trainer.state.cur_nimg,
        rollbacks: trainer.state.rollbacks,
    })
}
