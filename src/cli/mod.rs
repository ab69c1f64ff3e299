//! Command-line interface: parses options and calls library functions. One file per subcommand.

use anyhow::Result;
use clap::{Parser, Subcommand};

pub mod bench;
pub mod dataset_tool;
pub mod generate;
pub mod import;
pub mod info;
pub mod metrics;
pub mod project;
pub mod train;

#[derive(Parser, Debug)]
#[command(
    name = "sg2",
    version,
    about = "StyleGAN2 on libtorch: build datasets, train, generate and evaluate",
    long_about = "StyleGAN2 (config-f) on libtorch. Build multi-resolution datasets from LSUN LMDBs, image folders, \
                  MNIST or CIFAR-10; train with the official losses and regularisers; generate images from seeds \
                  exactly as the official tools do; and compute FID, KID, precision/recall, IS and PPL."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Compute device: auto (CUDA when libtorch sees a GPU, else CPU), cpu, cuda or cuda:N.
    #[arg(long, global = true, default_value = "auto")]
    pub device: String,
    /// CPU threads for libtorch and data work (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build, inspect and export multi-resolution datasets.
    #[command(name = "dataset-tool")]
    DatasetTool(dataset_tool::Args),
    /// Train a StyleGAN2 network.
    Train(train::Args),
    /// Generate one PNG per seed from a network.
    Generate(generate::GenerateArgs),
    /// The style-mixing figure: rows x columns of seeds with some layers' styles swapped.
    #[command(name = "style-mix")]
    StyleMix(generate::StyleMixArgs),
    /// An animated GIF walking through latent space between seeds.
    Interpolate(generate::InterpolateArgs),
    /// Compute quality metrics (FID, KID, precision/recall, IS, PPL).
    Metrics(metrics::Args),
    /// Project an image into a network's latent space (the official projector).
    ///
    /// As stylegan2-ada-pytorch's projector.py: w starts at the mean of 10,000 mapped z and is optimised with the
    /// noise inputs (Adam, the official learning-rate and noise schedules, the noise regulariser) to minimise the
    /// VGG16 LPIPS distance to the target. Writes target.png, proj.png and projected_w.npz (array w [1, num_ws,
    /// w_dim], the official format; render it with sg2 generate --projected-w).
    Project(project::Args),
    /// Build an sg2 checkpoint from an official network pickle (TensorFlow or ada), or from state dicts + kwargs.
    Import(import::Args),
    /// Validate a config or inspect a checkpoint: resolved values and a per-layer table.
    Info(info::Args),
    /// Measure speed: training, data loading, the dataset tool, metrics.
    Bench(bench::Args),
}

impl Global {
    /// Applies `--threads`, turns TF32 off (the official setting; a subcommand may allow it), resolves `--device`.
    pub fn setup(&self) -> Result<tch::Device> {
        crate::ffi::set_allow_tf32(false)?;
        if let Some(n) = self.threads {
            anyhow::ensure!(n >= 1, "--threads must be >= 1");
            tch::set_num_threads(n as i32);
            let _ = rayon::ThreadPoolBuilder::new().num_threads(n).build_global();
        }
        crate::device::parse_device(&self.device)
    }
}

pub fn run(cli: Cli) -> Result<()> {
    let g = cli.global;
    match cli.command {
        Command::DatasetTool(a) => dataset_tool::run(a, &g),
        Command::Train(a) => train::run(a, &g),
        Command::Generate(a) => generate::run_generate(a, &g),
        Command::StyleMix(a) => generate::run_style_mix(a, &g),
        Command::Interpolate(a) => generate::run_interpolate(a, &g),
        Command::Metrics(a) => metrics::run(a, &g),
        Command::Project(a) => project::run(a, &g),
        Command::Import(a) => import::run(a, &g),
        Command::Info(a) => info::run(a, &g),
        Command::Bench(a) => bench::run(a, &g),
    }
}

/// The error of a subcommand that is not built yet.
pub fn not_implemented(what: &str) -> anyhow::Error {
    anyhow::anyhow!("{what}: not implemented yet")
}
