//! `sg2 bench`.

use super::Global;
use anyhow::{ensure, Result};

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
        /// Number of timed steps (>= 1).
        #[arg(long, default_value_t = 16)]
        steps: u32,
        /// Several processes share each batch, as `sg2 train --nproc-per-node` does (the batch stays the total).
        #[command(flatten)]
        launch: super::launch::LaunchArgs,
    },
    /// Dataset tool throughput on a synthetic LSUN-style LMDB.
    Dataset {
        /// Number of synthetic images (>= 1).
        #[arg(long, default_value_t = 2000)]
        images: usize,
        /// Output resolution (a power of two from 4 to 8192).
        #[arg(long, default_value_t = 256)]
        resolution: u32,
    },
    /// Loader throughput (images/s) at a resolution.
    Loader {
        /// Resolution of the synthetic dataset (a power of two from 4 to 8192).
        #[arg(long, default_value_t = 256)]
        resolution: u32,
        /// Number of batches timed (>= 1).
        #[arg(long, default_value_t = 200)]
        batches: usize,
        /// Batch size (1 to 1024).
        #[arg(long, default_value_t = 32)]
        batch: usize,
    },
    /// Feature-extraction throughput of a detector.
    Metrics {
        /// Detector TorchScript file.
        #[arg(long)]
        detector: std::path::PathBuf,
        /// Batch size (1 to 1024).
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Batches per timed run (>= 1).
        #[arg(long, default_value_t = 8)]
        batches: usize,
    },
}

/// Checks the options' ranges before the (slow) set-up of a benchmark.
fn check(what: &BenchCommand) -> Result<()> {
    let max = crate::data::shards::MAX_RESOLUTION as u32;
    let resolution = |r: u32| -> Result<()> {
        ensure!(
            r.is_power_of_two() && (4..=max).contains(&r),
            "--resolution {r}: must be a power of two from 4 to {max}"
        );
        Ok(())
    };
    let at_least_one = |opt: &str, n: usize| -> Result<()> {
        ensure!(n >= 1, "{opt} {n}: must be >= 1");
        Ok(())
    };
    match *what {
        BenchCommand::Train { steps, .. } => at_least_one("--steps", steps as usize),
        BenchCommand::Dataset { images, resolution: r } => {
            resolution(r)?;
            at_least_one("--images", images)
        }
        BenchCommand::Loader { resolution: r, batches, batch } => {
            resolution(r)?;
            at_least_one("--batches", batches)?;
            super::check_batch(batch)
        }
        BenchCommand::Metrics { batch, batches, .. } => {
            at_least_one("--batches", batches)?;
            super::check_batch(batch)
        }
    }
}

pub fn run(args: Args, g: &Global) -> Result<()> {
    check(&args.what)?;
    if let BenchCommand::Train { launch, .. } = &args.what {
        if let Some(code) = launch.maybe_launch(crate::device::parse_device(&g.device)?)? {
            super::launch::exit_on_failure(code);
            return Ok(());
        }
    }
    let device = g.setup()?;
    let report = match args.what {
        BenchCommand::Dataset { images, resolution } => {
            crate::data::bench::bench_dataset(images, resolution as usize, g.threads()?)?
        }
        BenchCommand::Loader { resolution, batches, batch } => {
            crate::data::bench::bench_loader(resolution as usize, batches, batch, g.threads()?)?
        }
        BenchCommand::Train { config, set, batch, steps, .. } => {
            let mut sets = crate::config::labeled_sets(&set);
            if let Some(b) = batch {
                sets.push((format!("--batch {b}"), format!("training.batch={b}")));
            }
            let cfg = crate::config::load_labeled(&config, &sets)?;
            let dist = std::sync::Arc::new(crate::dist::Dist::from_env(device)?);
            crate::train::run::check_world(&cfg, dist.world)?;
            let device = dist.device(device)?;
            let modconv = crate::train::trainer::modconv_for(&cfg, device);
            crate::train::set_precision(&cfg.training)?;
            let t = &cfg.training;
            let precision = match (device.is_cuda(), t.allow_tf32, t.cpu_bf16, t.cpu_winograd) {
                (true, true, _, _) => ", TF32",
                (false, _, true, true) => ", bf16 convolutions, fp32 Winograd in the regularisers",
                (false, _, true, false) => ", bf16 convolutions",
                (false, _, false, true) => ", fp32 Winograd convolutions",
                _ => "",
            };
            let world = dist.world;
            let main = dist.is_main();
            let result = crate::train::bench::bench_train(&cfg, device, steps, dist)?;
            if !main {
                return Ok(());
            }
            let procs = if world > 1 { format!(", {world} processes") } else { String::new() };
            format!(
                "train {} on {}{procs} ({modconv:?} modulation{precision})\n{result}",
                config.display(),
                crate::device::describe(device),
            )
        }
        BenchCommand::Metrics { detector, batch, batches } => {
            crate::metrics::bench::bench_metrics(&detector, batch, batches, device)?
        }
    };
    println!("{report}");
    Ok(())
}
