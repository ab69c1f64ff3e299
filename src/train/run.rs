//! Opening a run: the dataset check, where training starts (fresh or a snapshot), the run folder and its log, the
//! loader. [`Run`] is the state the loop (`train_loop`) advances minibatch by minibatch.

use super::log::RunLog;
use super::snapshot::{self, TrainState};
use super::train_loop::{MetricsFn, Resume, TrainOptions};
use super::trainer::Trainer;
use super::Clock;
use crate::config::Config;
use crate::data::loader::{Loader, LoaderOptions};
use crate::data::Dataset;
use crate::dist::Dist;
use crate::image_io::ImageU8;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Tensor};

/// Opens the dataset and checks it fits the network.
pub fn open_dataset(data: &Path, cfg: &Config) -> Result<Dataset> {
    // A replacement that a kill interrupted is finished first (as `Dataset::open` does), so the folder may reappear.
    for msg in crate::data::dest::recover_swap(data).with_context(|| format!("--data {}", data.display()))? {
        eprintln!("{msg}");
    }
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
        let why = if ds.num_classes == 0 {
            "a conditional network needs a labelled dataset".to_string()
        } else {
            format!("set model.c_dim = {} to train on its labels, or 0 to ignore them", ds.num_classes)
        };
        bail!("--data {}: {} classes but model.c_dim = {} ({why})", data.display(), ds.num_classes, cfg.model.c_dim);
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

/// The checks a data-parallel group adds to the config's: `training.batch` is the global batch, split evenly, and
/// each rank's share forms whole minibatch-std groups (as the official asserts for its per-GPU batch).
pub fn check_world(cfg: &Config, world: usize) -> Result<()> {
    let (batch, world32) = (cfg.training.batch, world as u32);
    if !batch.is_multiple_of(world32) {
        bail!("training.batch = {batch} cannot be split evenly across {world} processes (the batch is the total)");
    }
    let local = batch / world32;
    let group = cfg.model.mbstd_group.min(local);
    if world > 1 && cfg.model.mbstd_features > 0 && !local.is_multiple_of(group) {
        bail!(
            "training.batch = {batch} over {world} processes is {local} per process, not a multiple of \
             model.mbstd_group = {} (D's minibatch-std groups are formed per process)",
            cfg.model.mbstd_group
        );
    }
    Ok(())
}

/// What rank 0 tells the others after opening the run.
#[derive(serde::Serialize, serde::Deserialize)]
enum Start {
    Train,
    NothingToDo { snapshot: PathBuf, state: TrainState },
    Failed,
}

/// The first 12 characters of a fingerprint, for messages.
fn short(fingerprint: &str) -> &str {
    if fingerprint.is_empty() {
        "none"
    } else {
        &fingerprint[..fingerprint.len().min(12)]
    }
}

/// Where the current tick started and what the last one reported.
pub(super) struct TickClock {
    pub start: Clock,
    pub tick: Clock,
    pub tick_start_nimg: u64,
    pub maintenance: f64,
    /// The previous tick's mean losses, for the collapse flag.
    pub prev_losses: BTreeMap<String, f64>,
}

impl TickClock {
    pub fn new(cur_nimg: u64) -> TickClock {
        TickClock {
            start: Clock::start(),
            tick: Clock::start(),
            tick_start_nimg: cur_nimg,
            maintenance: 0.0,
            prev_losses: BTreeMap::new(),
        }
    }
}

/// A run in progress: the trainer, its data, its folder and its clocks.
pub struct Run {
    pub(super) cfg: Config,
    pub(super) trainer: Trainer,
    pub(super) ds: Arc<Dataset>,
    pub(super) loader_opts: LoaderOptions,
    pub(super) loader: Loader,
    pub(super) device: Device,
    /// log.txt, stats.jsonl, TensorBoard: rank 0 only.
    pub(super) log: Option<RunLog>,
    pub(super) run_dir: PathBuf,
    /// The dataset's fingerprint, stored in every snapshot.
    pub(super) fingerprint: String,
    pub(super) total_nimg: u64,
    pub(super) metrics: Option<MetricsFn>,
    pub(super) clock: TickClock,
    pub(super) rollbacks_in_a_row: u32,
    pub(super) last_snapshot: Option<PathBuf>,
    /// A signal stopped the run (see `interrupt`): the last tick ends early with a snapshot and no metrics.
    pub(super) interrupted: bool,
    /// Held while the run writes its folder (rank 0 only).
    _lock: Option<snapshot::RunLock>,
}

/// What opening a run found.
pub enum Opened {
    Run(Box<Run>),
    /// The snapshot to resume is already at or past `total_kimg`.
    NothingToDo {
        snapshot: PathBuf,
        state: TrainState,
    },
}

impl Run {
    /// Opens the run on every rank: rank 0 as one process would (below), then it tells the others whether to train
    /// and sends them its state (networks, optimizers, loop state), which covers a resume and `--init`.
    pub fn open(opts: TrainOptions) -> Result<Opened> {
        let dist = opts.dist.clone();
        check_world(&opts.config, dist.world)?;
        if dist.world == 1 {
            return Self::open_main(opts);
        }
        if dist.is_main() {
            let opened = Self::open_main(opts);
            let start = match &opened {
                Ok(Opened::Run(_)) => Start::Train,
                Ok(Opened::NothingToDo { snapshot, state }) => {
                    Start::NothingToDo { snapshot: snapshot.clone(), state: state.clone() }
                }
                Err(_) => Start::Failed,
            };
            dist.broadcast_json(&start)?;
            let mut opened = opened?;
            if let Opened::Run(run) = &mut opened {
                run.join_workers()?;
            }
            return Ok(opened);
        }
        match dist.broadcast_json(&Start::Failed)? {
            Start::Failed => bail!("stopped: rank 0 could not open the run"),
            Start::NothingToDo { snapshot, state } => Ok(Opened::NothingToDo { snapshot, state }),
            Start::Train => Self::open_worker(opts),
        }
    }

    /// Rank 0's side of starting the others: its state and its dataset's fingerprint, which theirs must match.
    fn join_workers(&mut self) -> Result<()> {
        self.trainer.sync_from_main()?;
        let dist = self.trainer.dist.clone();
        dist.broadcast_json(&self.fingerprint)?;
        if dist.any(false)? {
            bail!(
                "another rank's --data {} differs from this one's (fingerprint {})",
                self.ds.path.display(),
                short(&self.fingerprint)
            );
        }
        Ok(())
    }

    /// A rank other than 0: the dataset, a trainer holding rank 0's state, this rank's share of the data; no folder,
    /// no log.
    fn open_worker(mut opts: TrainOptions) -> Result<Opened> {
        let cfg = opts.config.clone();
        let dist = opts.dist.clone();
        let ds = open_dataset(&opts.data, &cfg)?;
        let mut trainer = Trainer::new(&cfg, opts.device)?;
        trainer.dist = dist.clone();
        trainer.inject_nan = opts.inject_nan;
        trainer.label_pool = label_pool(&ds, &cfg, opts.device);
        trainer.sync_from_main()?;
        let fingerprint = ds.fingerprint();
        let main_fingerprint: String = dist.broadcast_json(&fingerprint)?;
        let differs = main_fingerprint != fingerprint;
        if dist.any(differs)? {
            if differs {
                bail!(
                    "--data {}: differs from rank 0's dataset (fingerprint {} vs {}); every rank needs the same data",
                    opts.data.display(),
                    short(&fingerprint),
                    short(&main_fingerprint)
                );
            }
            bail!("stopped: another rank's dataset differs");
        }
        let run = Run::assemble(trainer, Arc::new(ds), fingerprint, opts.device, opts.metrics.take(), None)?;
        Ok(Opened::Run(Box::new(run)))
    }

    /// A run of `trainer` on `ds` from the trainer's state; `folder` is rank 0's run folder, log and lock.
    fn assemble(
        trainer: Trainer,
        ds: Arc<Dataset>,
        fingerprint: String,
        device: Device,
        metrics: Option<MetricsFn>,
        folder: Option<(RunLog, PathBuf, snapshot::RunLock)>,
    ) -> Result<Run> {
        let cfg = trainer.cfg.clone();
        let loader_opts = loader_options(&cfg, &trainer.dist);
        let loader = Loader::resume(ds.clone(), loader_opts.clone(), device, trainer.state.loader)?;
        let cur_nimg = trainer.state.cur_nimg;
        let total_nimg = (cfg.training.total_kimg * 1000.0).round().max(1.0) as u64;
        let (log, run_dir, lock) = match folder {
            Some((log, dir, lock)) => (Some(log), dir, Some(lock)),
            None => (None, PathBuf::new(), None),
        };
        Ok(Run {
            cfg,
            trainer,
            ds,
            loader_opts,
            loader,
            device,
            log,
            run_dir,
            fingerprint,
            total_nimg,
            metrics,
            clock: TickClock::new(cur_nimg),
            rollbacks_in_a_row: 0,
            last_snapshot: None,
            interrupted: false,
            _lock: lock,
        })
    }

    /// Checks the dataset, finds the snapshot to resume (if any), builds the trainer, and opens the run folder
    /// (new, or the snapshot's for `--resume latest`) with its log and the initial grids.
    fn open_main(mut opts: TrainOptions) -> Result<Opened> {
        if opts.init.is_some() && opts.resume.is_some() {
            bail!("--init starts a new run and --resume continues one: give one of them");
        }
        let cfg = opts.config.clone();
        let ds = open_dataset(&opts.data, &cfg)?;
        let desc = format!("{}-{}", opts.config_name, dataset_name(&opts.data));
        let total_nimg = (cfg.training.total_kimg * 1000.0).round().max(1.0) as u64;

        // Where to start: a snapshot (and its folder for --resume latest) or nothing.
        let resume: Option<(Option<PathBuf>, PathBuf, TrainState)> = match &opts.resume {
            None => None,
            Some(Resume::Latest) => match snapshot::find_latest(&opts.outdir, &desc)? {
                Some((dir, snap, st)) => Some((Some(dir), snap, st)),
                None => {
                    bail!("--resume latest: no complete snapshot of a '{desc}' run under {}", opts.outdir.display())
                }
            },
            Some(Resume::Path(p)) => {
                let st = snapshot::load_state(p).context("--resume")?;
                Some((None, p.clone(), st))
            }
        };
        // A snapshot already at the length asked is still checked against the dataset and the config below, so
        // "nothing to do" means that the same command with a larger --kimg would train.
        let done = resume.as_ref().is_some_and(|(_, _, st)| st.cur_nimg >= total_nimg);
        // The folder of `--resume latest` is locked before anything is read or written, so a second trainer on it
        // stops at once.
        let existing: Option<(PathBuf, snapshot::RunLock)> =
            match resume.as_ref().filter(|_| !done).and_then(|r| r.0.clone()) {
                Some(dir) => {
                    let lock = snapshot::RunLock::acquire(&dir)?;
                    Some((dir, lock))
                }
                None => None,
            };
        let fingerprint = ds.fingerprint();

        let mut trainer = Trainer::new(&cfg, opts.device)?;
        trainer.dist = opts.dist.clone();
        trainer.inject_nan = opts.inject_nan;
        trainer.label_pool = label_pool(&ds, &cfg, opts.device);
        if let Some(net) = &opts.init {
            let ckpt = crate::model::checkpoint::load(net)?;
            trainer.init_from(&ckpt).with_context(|| format!("--init {}", net.display()))?;
        }
        let mut dataset_changed = false;
        if let Some((_, snap, st)) = &resume {
            let (ckpt, _) = snapshot::load(snap)?;
            let trained_on = ckpt.metadata.get(snapshot::KEY_DATASET).cloned().unwrap_or_default();
            if trained_on != fingerprint {
                if !opts.allow_dataset_change {
                    bail!(
                        "--resume {}: the snapshot was trained on another dataset (fingerprint {} vs {} of {}); \
                         pass --allow-dataset-change to continue on this one",
                        snap.display(),
                        short(&trained_on),
                        short(&fingerprint),
                        opts.data.display()
                    );
                }
                dataset_changed = true;
            }
            // The config given now governs (e.g. a longer total_kimg); the seed and position come from the snapshot.
            trainer.restore(&ckpt, st).with_context(|| format!("--resume {}", snap.display()))?;
            if dataset_changed {
                // The old position means nothing in another dataset: start the next epoch of this one.
                let l = trainer.state.loader;
                trainer.state.loader =
                    crate::data::loader::LoaderState { epoch: l.epoch + 1, position: 0, seed: l.seed };
            }
            let position = trainer.state.loader.position;
            if position >= ds.count {
                bail!(
                    "--resume {}: its loader position {position} is beyond the dataset's {} images (a damaged \
                     training state)",
                    snap.display(),
                    ds.count
                );
            }
            if done {
                return Ok(Opened::NothingToDo { snapshot: snap.clone(), state: st.clone() });
            }
        }
        let (run_dir, lock) = match existing {
            Some(held) => held,
            None => {
                let dir = snapshot::new_run_dir(&opts.outdir, &desc)?;
                let lock = snapshot::RunLock::acquire(&dir)?;
                (dir, lock)
            }
        };
        let stale = snapshot::remove_stale_temps(&run_dir)?;
        crate::util::write_bytes_atomic(&run_dir.join("config.toml"), cfg.to_toml().as_bytes())?;
        let mut log = RunLog::open(&run_dir, total_nimg, opts.echo)?;
        let (gp, dp) = trainer.param_counts();
        log.line(&format!("run folder {}", run_dir.display()))?;
        if opts.dist.world > 1 {
            let per = cfg.training.batch as usize / opts.dist.world;
            log.line(&format!("world size {} ({per} images per process and step; rank 0 writes)", opts.dist.world))?;
        }
        log.line(&format!(
            "dataset {} ({} images, {}x{}, {} channel(s)); device {}; G {gp} parameters, D {dp}",
            opts.data.display(),
            ds.count,
            cfg.model.resolution,
            cfg.model.resolution,
            ds.channels,
            crate::device::describe(opts.device)
        ))?;
        if let Some(net) = &opts.init {
            log.line(&format!("initialised G, D and G_ema from {} (new optimizers, kimg 0)", net.display()))?;
        }
        for p in &stale {
            log.line(&format!("removed {} (left by an interrupted write)", p.display()))?;
        }
        if let Some((same_dir, snap, st)) = &resume {
            let dropped = if same_dir.is_some() { log.rewind(st.cur_nimg)? } else { 0 };
            log.line(&format!(
                "resuming from {} at kimg {:.3}{}{}",
                snap.display(),
                st.cur_nimg as f64 / 1000.0,
                if dropped > 0 { format!(" ({dropped} later stats records discarded)") } else { String::new() },
                if dataset_changed { "; the dataset changed (--allow-dataset-change)" } else { "" }
            ))?;
        }
        log.line(&format!("training for {} kimg...", cfg.training.total_kimg))?;
        if !run_dir.join("reals.png").exists() {
            if let Some(img) = reals_grid(&ds, &cfg)? {
                img.save_png(run_dir.join("reals.png"))?;
            }
        }
        let folder = Some((log, run_dir, lock));
        let mut run = Run::assemble(trainer, Arc::new(ds), fingerprint, opts.device, opts.metrics.take(), folder)?;
        if !run.run_dir.join("fakes_init.png").exists() {
            let path = run.run_dir.join("fakes_init.png");
            run.save_fakes(&path)?;
        }
        Ok(Opened::Run(Box::new(run)))
    }

    /// Writes G_ema's fixed-seed grid to `path` and to TensorBoard (rank 0).
    pub(super) fn save_fakes(&mut self, path: &Path) -> Result<()> {
        let Some(log) = self.log.as_mut() else { return Ok(()) };
        let img = self.trainer.fakes_grid()?;
        img.save_png(path)?;
        log.tb.image("fakes", &img, self.trainer.state.cur_nimg as i64)
    }

    /// A line in log.txt (and on stdout when echoing); nothing on ranks other than 0.
    pub(super) fn line(&mut self, text: &str) -> Result<()> {
        match self.log.as_mut() {
            Some(log) => log.line(text),
            None => Ok(()),
        }
    }

    pub(super) fn dist(&self) -> Arc<Dist> {
        self.trainer.dist.clone()
    }
}

/// The dataset's labels for conditional fakes (None for unconditional networks).
fn label_pool(ds: &Dataset, cfg: &Config, device: Device) -> Option<Tensor> {
    (cfg.model.c_dim > 0).then(|| {
        let labels: Vec<i64> = (0..ds.count).map(|i| ds.label(i).unwrap_or(0) as i64).collect();
        Tensor::from_slice(&labels).to_device(device)
    })
}

/// The training loader's options: the global batch, this rank's share.
fn loader_options(cfg: &Config, dist: &Dist) -> LoaderOptions {
    let mut o = LoaderOptions::new(cfg.training.batch as usize, cfg.model.resolution as usize);
    o.seed = cfg.training.seed;
    o.mirror = cfg.training.mirror;
    (o.rank, o.world) = (dist.rank, dist.world);
    o
}
