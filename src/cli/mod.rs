//! Command-line interface: parses options and calls library functions. One file per subcommand.

use anyhow::Result;
use clap::{Parser, Subcommand};

pub mod bench;
pub mod dataset_tool;
pub mod generate;
pub mod import;
pub mod info;
pub mod launch;
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
    /// CPU threads for libtorch and data work (default: all cores; at most 4 per core).
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

/// At most this many threads per core: libtorch and rayon start every thread asked for, and 100,000 of them hang
/// the process where a few per core already keep every core busy.
pub const THREADS_PER_CORE: usize = 4;

/// `n` bounded to `THREADS_PER_CORE` per core; says so on stderr when it lowers `n` (given as `option`).
pub fn bounded_threads(option: &str, n: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let max = THREADS_PER_CORE * cores;
    if n > max {
        eprintln!("note: {option} {n}: using {max} (at most {THREADS_PER_CORE} per core, {cores} cores)");
    }
    n.min(max)
}

/// Largest images per forward pass: more only risks running out of memory mid-run.
pub const MAX_BATCH: usize = 1024;

/// `--batch`: 1 to [`MAX_BATCH`].
pub fn check_batch(n: usize) -> Result<()> {
    anyhow::ensure!((1..=MAX_BATCH).contains(&n), "--batch {n}: must be from 1 to {MAX_BATCH}");
    Ok(())
}

/// Truncation psi beyond this magnitude extrapolates so far from the average that images fall apart.
pub const PSI_WARN: f64 = 2.0;
/// Beyond this w is only the direction of (w - w_avg) times a huge number: saturated or constant images, and past
/// float32's range an overflow.
pub const PSI_MAX: f64 = 100.0;

/// `--trunc`: a finite number of magnitude at most [`PSI_MAX`]; a warning when it is far outside the usual 0 to 1.
pub fn check_psi(psi: f64) -> Result<()> {
    anyhow::ensure!(psi.is_finite(), "--trunc {psi}: must be a finite number");
    anyhow::ensure!(psi.abs() <= PSI_MAX, "--trunc {psi:e}: must be from -{PSI_MAX} to {PSI_MAX}");
    if psi.abs() > PSI_WARN {
        eprintln!(
            "warning: --trunc {psi}: far outside the usual 0 to 1 (|psi| > {PSI_WARN}); images will be distorted"
        );
    }
    Ok(())
}

impl Global {
    /// `--threads`, checked and bounded (None: all cores).
    pub fn threads(&self) -> Result<Option<usize>> {
        match self.threads {
            None => Ok(None),
            Some(0) => anyhow::bail!("--threads 0: must be >= 1"),
            Some(n) => Ok(Some(bounded_threads("--threads", n))),
        }
    }

    /// Applies `--threads`, turns TF32, CPU bf16 and Winograd off (the official numbers; a subcommand may allow
    /// them), resolves `--device`.
    pub fn setup(&self) -> Result<tch::Device> {
        crate::ffi::set_allow_tf32(false)?;
        crate::nn::ops::set_cpu_bf16(false);
        crate::nn::ops::set_cpu_winograd(false);
        if let Some(n) = self.threads()? {
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
