//! `sg2 import`: official state dicts + constructor kwargs -> an sg2 checkpoint.

use super::Global;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Generator state dict with official names (safetensors), e.g. NAME-G.safetensors from
    /// scripts/convert_official.py (for a training pickle, the EMA generator).
    #[arg(long)]
    pub g: PathBuf,
    /// Discriminator state dict (optional; without it the checkpoint can generate and be evaluated but not resume
    /// training).
    #[arg(long)]
    pub d: Option<PathBuf>,
    /// Official constructor kwargs: JSON {"G": {z_dim, w_dim, img_resolution, img_channels, mapping_kwargs,
    /// synthesis_kwargs: {channel_base, channel_max, ...}}, "D": {...}}. channel_base is twice sg2's fmap_base.
    #[arg(long)]
    pub kwargs: PathBuf,
    /// Output sg2 checkpoint (.safetensors), written atomically.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args, g: &Global) -> Result<()> {
    g.setup()?;
    let cfg = crate::model::import::import(&args.g, args.d.as_deref(), &args.kwargs, &args.out)?;
    let m = &cfg.model;
    println!(
        "{}: {}x{}x{} network, z_dim {}, w_dim {}, fmap_base {}, fmap_max {}{}",
        args.out.display(),
        m.channels,
        m.resolution,
        m.resolution,
        m.z_dim,
        m.w_dim,
        m.fmap_base,
        m.fmap_max,
        if args.d.is_some() { " (G, G_ema, D)" } else { " (G, G_ema; no D: cannot resume training)" }
    );
    Ok(())
}
