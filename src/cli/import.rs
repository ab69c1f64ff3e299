//! `sg2 import`: an official network pickle, or official state dicts + constructor kwargs, -> an sg2 checkpoint.

use super::Global;
use crate::config::Config;
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  sg2 import stylegan2-cat-config-f.pkl --out cat.safetensors\n  sg2 import --g \
                        net-G.safetensors --d net-D.safetensors --kwargs net-kwargs.json --out net.safetensors")]
pub struct Args {
    /// Official network pickle: an NVlabs/stylegan2 TensorFlow pickle (G, D, Gs) or a stylegan2-ada-pytorch
    /// snapshot (G, D, G_ema, ...). Read directly: no Python or TensorFlow needed, nothing in the file is run.
    #[arg(value_name = "PICKLE", conflicts_with_all = ["g", "d", "kwargs"], required_unless_present = "g")]
    pub pickle: Option<PathBuf>,
    /// Instead of a pickle: the generator's state dict with official names (safetensors), stored as G and G_ema.
    #[arg(long, requires = "kwargs")]
    pub g: Option<PathBuf>,
    /// With --g: the discriminator's state dict (optional; without it the checkpoint can generate and be
    /// evaluated but not resume training).
    #[arg(long, requires = "g")]
    pub d: Option<PathBuf>,
    /// With --g: official constructor kwargs, JSON {"G": {z_dim, w_dim, img_resolution, img_channels,
    /// mapping_kwargs, synthesis_kwargs: {channel_base, channel_max, ...}}, "D": {...}}. channel_base is twice
    /// sg2's fmap_base.
    #[arg(long, requires = "g")]
    pub kwargs: Option<PathBuf>,
    /// Output sg2 checkpoint (.safetensors), written atomically.
    #[arg(long)]
    pub out: PathBuf,
}

fn summary(out: &Path, cfg: &Config, what: &str) {
    let m = &cfg.model;
    println!(
        "{}: {}x{}x{} network, z_dim {}, w_dim {}, fmap_base {}, fmap_max {}{what}",
        out.display(),
        m.channels,
        m.resolution,
        m.resolution,
        m.z_dim,
        m.w_dim,
        m.fmap_base,
        m.fmap_max,
    );
}

pub fn run(args: Args, g: &Global) -> Result<()> {
    g.setup()?;
    let inputs: Vec<&std::path::Path> =
        [&args.pickle, &args.g, &args.d, &args.kwargs].into_iter().flatten().map(|p| p.as_path()).collect();
    crate::util::check_output_file(&args.out, "--out", &inputs)?;
    if let Some(pkl) = &args.pickle {
        let (cfg, o) = crate::model::import::import_pickle(pkl, &args.out)?;
        let nets = match (o.g.is_some(), o.d.is_some()) {
            (true, true) => "G, G_ema, D",
            (false, true) => "G_ema as G and G_ema, D",
            (true, false) => "G, G_ema; no D: cannot resume training",
            (false, false) => "G_ema as G and G_ema; no D: cannot resume training",
        };
        let mirror = o.mirror.map(|m| format!(", training.mirror = {m}")).unwrap_or_default();
        summary(&args.out, &cfg, &format!(" from a {} pickle ({nets}{mirror})", o.kind));
        return Ok(());
    }
    let (Some(gp), Some(kw)) = (&args.g, &args.kwargs) else { bail!("give a pickle, or --g and --kwargs") };
    let cfg = crate::model::import::import(gp, args.d.as_deref(), kw, &args.out)?;
    let nets = if args.d.is_some() { " (G, G_ema, D)" } else { " (G, G_ema; no D: cannot resume training)" };
    summary(&args.out, &cfg, nets);
    Ok(())
}
