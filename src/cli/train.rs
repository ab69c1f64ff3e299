//! `sg2 train`.

use super::Global;
use anyhow::Result;
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

pub fn run(_args: Args, _g: &Global) -> Result<()> {
    Err(super::not_implemented("sg2 train"))
}
