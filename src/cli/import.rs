//! `sg2 import`.

use super::Global;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Generator state dict with official names (safetensors), e.g. from scripts/convert_official.py.
    #[arg(long)]
    pub g: PathBuf,
    /// Discriminator state dict (optional; without it the checkpoint can generate but not resume training).
    #[arg(long)]
    pub d: Option<PathBuf>,
    /// Official constructor kwargs (JSON: {"G": {...}, "D": {...}}).
    #[arg(long)]
    pub kwargs: PathBuf,
    /// Output sg2 checkpoint (.safetensors).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(_args: Args, _g: &Global) -> Result<()> {
    Err(super::not_implemented("sg2 import"))
}
