//! `sg2 train`.

use super::Global;
use crate::dist::Dist;
use crate::train::{Resume, TrainOptions};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training config (TOML), e.g. configs/config-f.toml.
    #[arg(long)]
    pub config: PathBuf,
    /// Override a config key: --set training.r1_gamma=5 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Dataset folder made by `sg2 dataset-tool`.
    #[arg(long)]
    pub data: PathBuf,
    /// Parent folder of the run folders (runs/NNNNN-<config>-<dataset>/).
    #[arg(long, default_value = "runs")]
    pub outdir: PathBuf,
    /// Override training.total_kimg.
    #[arg(long)]
    pub kimg: Option<f64>,
    /// Override training.seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Train at this level of detail of the dataset (default: model.resolution).
    #[arg(long)]
    pub resolution: Option<u32>,
    /// Folder with the detector TorchScript files for `logging.metrics` (default: $SG2_HOME/detectors).
    #[arg(long)]
    pub detector_dir: Option<PathBuf>,
    /// Resume from a checkpoint path, or `latest` (the newest complete snapshot under --outdir for this config and
    /// dataset).
    #[arg(long, value_name = "latest|PATH", value_parser = parse_resume)]
    pub resume: Option<Resume>,
    /// Transfer learning: start a new run from the G, D and G_ema weights of this network (any sg2 checkpoint, e.g.
    /// an imported official one) with fresh optimizers at kimg 0. Its shapes must match the config.
    #[arg(long, value_name = "NET", conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// With --resume: continue on --data even when the snapshot was trained on another dataset (its fingerprint
    /// differs); the data order starts a new epoch.
    #[arg(long, requires = "resume")]
    pub allow_dataset_change: bool,
    #[command(flatten)]
    pub launch: super::launch::LaunchArgs,
}

fn parse_resume(s: &str) -> Result<Resume, String> {
    match s {
        "" => Err("expected latest or a snapshot path".into()),
        "latest" => Ok(Resume::Latest),
        path => Ok(Resume::Path(path.into())),
    }
}

/// The config with the command line's overrides: --set, then --kimg, --seed and --resolution as `--set`s.
pub fn resolve_config(args: &Args) -> Result<crate::config::Config> {
    let mut sets = crate::config::labeled_sets(&args.set);
    if let Some(k) = args.kimg {
        sets.push((format!("--kimg {k}"), format!("training.total_kimg={}", toml_float(k))));
    }
    if let Some(s) = args.seed {
        sets.push((format!("--seed {s}"), format!("training.seed={s}")));
    }
    if let Some(r) = args.resolution {
        sets.push((format!("--resolution {r}"), format!("model.resolution={r}")));
    }
    Ok(crate::config::load_labeled(&args.config, &sets)?)
}

/// A float as TOML writes it (`nan`, `inf`, `-inf` included), so the config's own check judges it.
fn toml_float(x: f64) -> String {
    match x {
        _ if x.is_nan() => "nan".into(),
        _ if x.is_infinite() => (if x > 0.0 { "inf" } else { "-inf" }).into(),
        _ => format!("{x:?}"),
    }
}

pub fn run(args: Args, g: &Global) -> Result<()> {
    args.launch.check()?;
    if args.launch.launches() {
        // Checked once here rather than in every worker.
        let world = args.launch.nproc_per_node * args.launch.nnodes;
        crate::train::run::check_world(&resolve_config(&args)?, world)?;
    }
    if let Some(code) = args.launch.maybe_launch(crate::device::parse_device(&g.device)?)? {
        super::launch::exit_on_failure(code);
        return Ok(());
    }
    let asked = g.setup()?;
    let dist = Arc::new(Dist::from_env(asked)?);
    let rank = dist.rank;
    let several = dist.world > 1;
    train(args, asked, dist).map_err(|e| if several { e.context(format!("rank {rank}")) } else { e })
}

fn train(args: Args, asked: tch::Device, dist: Arc<Dist>) -> Result<()> {
    let device = dist.device(asked)?;
    let config = resolve_config(&args)?;
    crate::train::set_precision(&config.training)?;
    let stem = args
        .config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .with_context(|| format!("--config {}: no file name", args.config.display()))?;
    let mut opts = TrainOptions::new(config, &stem, &args.data, &args.outdir);
    opts.device = device;
    opts.echo = dist.is_main();
    opts.dist = dist;
    opts.allow_dataset_change = args.allow_dataset_change;
    opts.init = args.init.clone();
    opts.resume = args.resume;
    if !opts.config.logging.metrics.is_empty() {
        opts.metrics = Some(snapshot_metrics(&opts.config, &args.data, args.detector_dir.clone(), device, &opts.dist)?);
    }
    if crate::train::train(opts)?.interrupted {
        // The conventional status of a run ended by Ctrl-C.
        std::process::exit(130);
    }
    Ok(())
}

/// The metrics of `logging.metrics` on G_ema at each snapshot, with the counts of `logging.metrics_num_gen` /
/// `metrics_num_real`; each result is also appended to `metric-<name>.jsonl` in the run folder, as `sg2 metrics`
/// does beside a network. The detectors are loaded before training starts, so a missing or damaged file fails at
/// once rather than after the first snapshot.
fn snapshot_metrics(
    config: &crate::config::Config,
    data: &std::path::Path,
    detector_dir: Option<PathBuf>,
    device: tch::Device,
    dist: &Arc<Dist>,
) -> Result<crate::train::train_loop::MetricsFn> {
    use crate::metrics::{self, MetricOptions};
    let mut opts = MetricOptions::new(device);
    opts.detector_dir = detector_dir;
    opts.num_gen = config.logging.metrics_num_gen.map(|n| n as usize);
    opts.num_real = config.logging.metrics_num_real.map(|n| n as usize);
    // The same latents at every snapshot, so values are comparable; training re-seeds its own generator per
    // minibatch, so this does not disturb it.
    opts.seed = Some(0);
    // Every rank computes its share of the images; all get the whole set's values.
    opts.dist = Some(dist.clone());
    opts.progress = false;
    opts.mirror = config.training.mirror;
    // A metric named twice is computed once, as `sg2 metrics` does.
    let mut names: Vec<String> = vec![];
    for name in &config.logging.metrics {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    for name in &names {
        let spec = metrics::spec(name).with_context(|| format!("logging.metrics: {name}"))?;
        // Loaded once here so that a damaged or wrong file fails now, not after the first tick.
        metrics::detector::Detector::find_and_load(opts.detector_dir.as_deref(), spec.detector(), device)?;
    }
    // So are counts that a metric cannot work with (`logging.metrics_num_gen = 3` for pr50k3_full).
    // (A dataset that does not open yet, such as one in the middle of a replacement, is left to the run.)
    if let Ok(ds) = crate::data::Dataset::open(data) {
        metrics::check_counts(&names, &opts, Some(&ds)).context("logging.metrics")?;
    }
    let data = data.to_path_buf();
    let (main, world) = (dist.is_main(), dist.world);
    Ok(Box::new(move |g, snapshot| {
        let results = metrics::evaluate_generator(g, &data, &names, &opts)?;
        if !main {
            return Ok(results);
        }
        let dir = snapshot.parent().unwrap_or(std::path::Path::new("."));
        let file = snapshot.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        metrics::report::append_jsonl_ranks(dir, &file, &results, world)?;
        Ok(results)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn resume_is_latest_or_a_path() {
        let parse = |v: &str| {
            crate::cli::Cli::try_parse_from(["sg2", "train", "--config", "c.toml", "--data", "d", "--resume", v])
        };
        let resume = |v: &str| match parse(v).unwrap().command {
            crate::cli::Command::Train(a) => a.resume,
            _ => unreachable!(),
        };
        assert_eq!(resume("latest"), Some(Resume::Latest));
        assert_eq!(resume("runs/x.safetensors"), Some(Resume::Path("runs/x.safetensors".into())));
        assert!(parse("").is_err());
    }
}
