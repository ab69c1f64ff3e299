//! `sg2 metrics`.

use super::Global;
use crate::metrics::{self, compare, report, MetricOptions};
use crate::model::checkpoint;
use anyhow::{bail, ensure, Result};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Network checkpoint (.safetensors) to evaluate.
    #[arg(long)]
    pub network: Option<PathBuf>,
    /// Dataset of real images (a dataset-tool folder); IS and PPL of an unconditional network need none.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Comma-separated metrics: fid50k_full, fid50k, kid50k_full, pr50k3_full, is50k, ppl2_wend, ppl_zfull,
    /// ppl_wfull, ppl_zend, ppl_wend (with --real/--fake: fid, kid, pr) [default: fid50k_full; with --real/--fake:
    /// fid].
    #[arg(long)]
    pub metrics: Option<String>,
    /// Real images for a dataset-vs-dataset comparison (dataset folder or image folder).
    #[arg(long)]
    pub real: Option<PathBuf>,
    /// Fake images for a dataset-vs-dataset comparison (dataset folder or image folder).
    #[arg(long)]
    pub fake: Option<PathBuf>,
    /// Folder with the detector TorchScript files (default: $SG2_HOME/detectors).
    #[arg(long)]
    pub detector_dir: Option<PathBuf>,
    /// Number of generated images, 1 to 10 million (overrides the metric's count; the printed name says so).
    #[arg(long)]
    pub num_gen: Option<usize>,
    /// Number of real images, 1 to 10 million (overrides the metric's count; at most the dataset's size, and the
    /// printed name gives the count used).
    #[arg(long)]
    pub num_real: Option<usize>,
    /// Truncation psi for generated images (a warning beyond +-2).
    #[arg(long, default_value_t = 1.0)]
    pub trunc: f64,
    /// Batch size for generation and feature extraction (1 to 1024).
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// With --real REF --fake CANDIDATES: write a TSV ranking each candidate by its distance (Inception features) to
    /// the k-th nearest reference image, nearest first, with whether it lies inside the reference manifold. A TAB,
    /// newline, carriage return or backslash in a file name is written as \t, \n, \r or \\.
    #[arg(long, value_name = "OUT.tsv", conflicts_with = "metrics")]
    pub rank: Option<PathBuf>,
    /// Neighbourhood size k for --rank (>= 1, below the number of reference images).
    #[arg(long, default_value_t = 3)]
    pub k: i64,
    /// Seed of torch's generator for latents, noise and labels.
    #[arg(long, default_value_t = 0)]
    pub seed: i64,
    /// Do not read or write the cache of real-image statistics ($SG2_HOME/cache).
    #[arg(long)]
    pub no_cache: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Whether the network was trained on the x-flipped dataset (true/false; default: the network's
    /// `training.mirror`). The TF-era metrics (fid50k, kid50k, pr50k3) then read the reals x-flipped as the
    /// official tool does; the `_full` metrics never do.
    #[arg(long, value_name = "BOOL")]
    pub mirror: Option<bool>,
    /// Let CUDA use TF32 for matmuls and convolutions (faster on Ampere and later; the official metrics run without
    /// it, and TF32 inflates PPL).
    #[arg(long)]
    pub allow_tf32: bool,
    /// Several processes (--nproc-per-node N): each computes a share of the images and the values equal one
    /// process's; rank 0 prints and appends the JSONL. --real/--fake comparisons run on rank 0 alone.
    #[command(flatten)]
    pub launch: super::launch::LaunchArgs,
}

/// Largest --num-gen / --num-real: the official counts are 50k (1M reals for KID); 10M features take 80 GB.
const MAX_IMAGES: usize = 10_000_000;

pub fn run(args: Args, g: &Global) -> Result<()> {
    super::check_batch(args.batch)?;
    super::check_psi(args.trunc)?;
    for (opt, n) in [("--num-gen", args.num_gen), ("--num-real", args.num_real)] {
        if let Some(n) = n {
            ensure!((1..=MAX_IMAGES).contains(&n), "{opt} {n}: must be from 1 to {MAX_IMAGES}");
        }
    }
    ensure!(args.k >= 1, "--k {}: must be >= 1", args.k);
    // Options are checked before any worker starts.
    if let Some(code) = args.launch.maybe_launch(crate::device::parse_device(&g.device)?)? {
        super::launch::exit_on_failure(code);
        return Ok(());
    }
    let asked = g.setup()?;
    let dist = crate::dist::Dist::from_env(asked)?;
    let device = dist.device(asked)?;
    crate::ffi::set_allow_tf32(args.allow_tf32)?;
    let mut opts = MetricOptions::new(device);
    opts.detector_dir = args.detector_dir.clone();
    opts.num_gen = args.num_gen;
    opts.num_real = args.num_real;
    opts.truncation_psi = args.trunc;
    opts.batch = args.batch;
    opts.progress = !args.quiet && std::io::stderr().is_terminal() && dist.is_main();
    opts.seed = Some(args.seed);
    if args.no_cache {
        opts.cache_dir = None;
    }
    let comparing = args.real.is_some() || args.fake.is_some();
    let list = args.metrics.as_deref().unwrap_or(if comparing { "fid" } else { "fid50k_full" });
    let mut names: Vec<String> = vec![];
    for n in list.split(',').map(str::trim) {
        ensure!(!n.is_empty(), "--metrics {list}: an empty name in the list");
        // A metric named twice is computed once.
        if !names.iter().any(|m| m == n) {
            names.push(n.to_string());
        }
    }
    match (&args.network, &args.data, &args.real, &args.fake) {
        (Some(net), data, None, None) => {
            ensure!(args.rank.is_none(), "--rank needs --real REF --fake CANDIDATES");
            // Check the names and the detectors before the (slow) network load.
            for n in &names {
                let m = metrics::spec(n)?;
                if data.is_none() && metrics::needs_reals(m) {
                    bail!("--metrics {n}: compares with real images: give --data DATASET");
                }
            }
            let (cfg, _vs, gen) = checkpoint::load_generator(net, device)?;
            opts.mirror = args.mirror.unwrap_or(cfg.training.mirror);
            // IS and PPL alone need no dataset (for an unconditional network).
            let ds = data.as_ref().map(crate::data::Dataset::open).transpose()?;
            if let (Some(ds), Some(data)) = (&ds, data) {
                let res = metrics::real_resolution(&gen, ds)?;
                if res != ds.resolution && dist.is_main() {
                    eprintln!(
                        "note: {} is {1}x{1}; comparing with its {res}x{res} level",
                        data.display(),
                        ds.resolution
                    );
                }
            }
            let world = dist.world;
            if world > 1 {
                opts.dist = Some(Arc::new(dist));
            }
            let results = metrics::evaluate(&gen, ds.as_ref(), &names, &opts)?;
            if !opts.is_main() {
                return Ok(());
            }
            let stem = net.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let file = net.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            print_results(&stem, &results)?;
            let dir = net.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            // The values are printed: a folder that takes no file (read-only) costs the record, not the run.
            if let Err(e) = report::append_jsonl_ranks(dir, &file, &results, world) {
                eprintln!("warning: {e:#}; the values above were not recorded");
            }
            Ok(())
        }
        (None, None, Some(real), Some(fake)) => {
            // Image folders are read whole by one process: the comparison and the ranking run on rank 0.
            if !dist.is_main() {
                return Ok(());
            }
            if let Some(out) = &args.rank {
                let ranked = compare::rank(real, fake, out, args.k, &opts)?;
                let inside = ranked.iter().filter(|r| r.inside).count();
                eprintln!(
                    "ranked {} images by distance to {} -> {} ({inside} inside the reference manifold)",
                    ranked.len(),
                    real.display(),
                    out.display()
                );
                return Ok(());
            }
            let results = compare::compare(real, fake, &names, &opts)?;
            let label = fake.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            print_results(&label, &results)
        }
        _ => bail!("give either --network CKPT --data DATASET (IS and PPL: --network alone), or --real A --fake B"),
    }
}

fn print_results(label: &str, results: &[metrics::MetricResult]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for r in results {
        writeln!(out, "{}", report::result_line(label, r))?;
    }
    out.flush()?;
    Ok(())
}
