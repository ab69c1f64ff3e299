//! `sg2 dataset-tool`.

use super::Global;
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: DatasetCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum DatasetCommand {
    /// Convert an LSUN LMDB (folder or original .zip) to multi-resolution shards.
    #[command(name = "create_lsun")]
    CreateLsun,
}

pub fn run(_args: Args, _g: &Global) -> Result<()> {
    Err(super::not_implemented("sg2 dataset-tool"))
}
