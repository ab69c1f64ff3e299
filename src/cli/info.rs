//! `sg2 info`: validate a config, or inspect a checkpoint; both print the resolved config and per-layer tables.

use super::Global;
use crate::config::Config;
use crate::model::summary::{rows, table, Net};
use crate::model::{Discriminator, Generator};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use tch::nn::VarStore;
use tch::Device;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Config (TOML) to validate: prints the resolved values and the networks it describes.
    #[arg(long, conflicts_with = "network")]
    pub config: Option<PathBuf>,
    /// Override a config key: --set training.r1_gamma=5 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Checkpoint (.safetensors) to inspect: its stored config, metadata and networks.
    #[arg(long)]
    pub network: Option<PathBuf>,
    /// Print only the resolved config, without the layer tables.
    #[arg(long)]
    pub config_only: bool,
}

fn print_tables(cfg: &Config, cuda: bool, d_present: bool) {
    let gvs = VarStore::new(Device::Cpu);
    let _g = Generator::new(&gvs.root(), &cfg.model);
    println!("{}", table("G", &rows(&cfg.model, Net::G, &gvs, cuda)));
    if d_present {
        let dvs = VarStore::new(Device::Cpu);
        let _d = Discriminator::new(&dvs.root(), &cfg.model);
        println!("{}", table("D", &rows(&cfg.model, Net::D, &dvs, cuda)));
    }
}

pub fn run(args: Args, g: &Global) -> Result<()> {
    let device = g.setup()?;
    let cuda = device.is_cuda();
    match (&args.config, &args.network) {
        (Some(path), _) => {
            let cfg = crate::config::load(path, &args.set)?;
            println!("# {} (resolved)", path.display());
            println!("{}", cfg.to_toml());
            if !args.config_only {
                print_tables(&cfg, cuda, true);
            }
        }
        (None, Some(path)) => {
            if !args.set.is_empty() {
                bail!("--set applies to --config, not --network");
            }
            let ckpt = crate::model::checkpoint::load(path)?;
            // The checks `generate` and `train --resume` make, so a checkpoint they refuse is not reported as fine.
            ckpt.verify().with_context(|| path.display().to_string())?;
            println!("# {}", path.display());
            for (k, v) in &ckpt.metadata {
                if k != crate::model::checkpoint::KEY_CONFIG {
                    println!("# {k} = {v}");
                }
            }
            let nets: Vec<&str> = ["G", "G_ema", "D"].into_iter().filter(|p| ckpt.has(p)).collect();
            println!("# networks: {}", nets.join(", "));
            println!("{}", ckpt.config.to_toml());
            if !args.config_only {
                print_tables(&ckpt.config, cuda, ckpt.has("D"));
            }
        }
        (None, None) => bail!("sg2 info needs --config FILE or --network CKPT"),
    }
    Ok(())
}
