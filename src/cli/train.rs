//! `sg2 train`.

use super::Global;
use crate::train::{Resume, TrainOptions};
use anyhow::{Context, Result};
use std::path::PathBuf;

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
    /// Resume from a checkpoint path, or `latest` (the newest complete snapshot under --outdir for this config and
    /// dataset).
    #[arg(long)]
    pub resume: Option<String>,
}

/// The config with the command line's overrides: --set, then --kimg, --seed and --resolution as `--set`s.
pub fn resolve_config(args: &Args) -> Result<crate::config::Config> {
    let mut sets = args.set.clone();
    if let Some(k) = args.kimg {
        sets.push(format!("training.total_kimg={k:?}"));
    }
    if let Some(s) = args.seed {
        sets.push(format!("training.seed={s}"));
    }
    if let Some(r) = args.resolution {
        sets.push(format!("model.resolution={r}"));
    }
    Ok(crate::config::load(&args.config, &sets)?)
}

pub fn run(args: Args, g: &Global) -> Result<()> {
    let device = g.setup()?;
    let config = resolve_config(&args)?;
    let stem = args
        .config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .with_context(|| format!("--config {}: no file name", args.config.display()))?;
    let mut opts = TrainOptions::new(config, &stem, &args.data, &args.outdir);
    opts.device = device;
    opts.echo = true;
    opts.resume = args.resume.as_deref().map(|r| if r == "latest" { Resume::Latest } else { Resume::Path(r.into()) });
    crate::train::train(opts)?;
    Ok(())
}
