//! `sg2 bench`.

use super::Global;
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub what: BenchCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Training throughput (sec/kimg, images/s) split into G, D and regularisation phases.
    Train {
        /// Training config (TOML).
        #[arg(long)]
        config: std::path::PathBuf,
        /// Override a config key (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Minibatch size (default: the config's).
        #[arg(long)]
        batch: Option<u32>,
        /// Number of timed steps.
        #[arg(long, default_value_t = 16)]
        steps: u32,
    },
    /// Dataset tool throughput on a synthetic LSUN-style LMDB.
    Dataset {
        /// Number of synthetic images.
        #[arg(long, default_value_t = 2000)]
        images: usize,
        /// Output resolution.
        #[arg(long, default_value_t = 256)]
        resolution: u32,
    },
    /// Loader throughput (images/s) at a resolution.
    Loader {
        /// Resolution of the synthetic dataset.
        #[arg(long, default_value_t = 256)]
        resolution: u32,
        /// Number of batches timed.
        #[arg(long, default_value_t = 200)]
        batches: usize,
        /// Batch size.
        #[arg(long, default_value_t = 32)]
        batch: usize,
    },
    /// Feature-extraction throughput of a detector.
    Metrics {
        /// Detector TorchScript file.
        #[arg(long)]
        detector: std::path::PathBuf,
        /// Batch size.
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Batches per timed run.
        #[arg(long, default_value_t = 8)]
        batches: usize,
    },
}

pub fn run(args: Args, g: &Global) -> Result<()> {
    let device = g.setup()?;
    let report = match args.what {
        BenchCommand::Dataset { images, resolution } => crate::data::bench::bench_dataset(images, resolution as usize)?,
        BenchCommand::Loader { resolution, batches, batch } => {
            crate::data::bench::bench_loader(resolution as usize, batches, batch)?
        }
        BenchCommand::Train { config, set, batch, steps } => {
            let mut sets = set;
            if let Some(b) = batch {
                sets.push(format!("training.batch={b}"));
            }
            let cfg = crate::config::load(&config, &sets)?;
            let modconv = crate::train::trainer::modconv_for(&cfg, device);
            format!(
                "train {} on {} ({modconv:?} modulation)\n{}",
                config.display(),
                crate::device::describe(device),
                crate::train::bench::bench_train(&cfg, device, steps)?
            )
        }
        BenchCommand::Metrics { detector, batch, batches } => {
            crate::metrics::bench::bench_metrics(&detector, batch, batches, device)?
        }
    };
    println!("{report}");
    Ok(())
}
