//! `sg2 info`.

use super::Global;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Config (TOML) to validate and print resolved.
    #[arg(long, conflicts_with = "network")]
    pub config: Option<PathBuf>,
    /// Override a config key: --set training.r1_gamma=5 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Checkpoint (.safetensors) to inspect.
    #[arg(long)]
    pub network: Option<PathBuf>,
}

pub fn run(args: Args, _g: &Global) -> Result<()> {
    let Some(path) = args.config else {
        return Err(super::not_implemented("sg2 info --network"));
    };
    let cfg = crate::config::load(&path, &args.set)?;
    println!("# {} (resolved)", path.display());
    print!("{}", cfg.to_toml());
    Ok(())
}
