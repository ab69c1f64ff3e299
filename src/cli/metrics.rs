//! `sg2 metrics`.

use super::Global;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Network checkpoint (.safetensors) to evaluate.
    #[arg(long)]
    pub network: Option<PathBuf>,
    /// Dataset of real images (a dataset-tool folder).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Comma-separated metrics: fid50k_full, fid50k, kid50k_full, pr50k3_full, is50k, ppl2_wend, ppl_zfull,
    /// ppl_wfull, ppl_zend, ppl_wend (with --real/--fake: fid, kid, pr).
    #[arg(long, default_value = "fid50k_full")]
    pub metrics: String,
    /// Real images for a dataset-vs-dataset comparison (dataset folder or image folder).
    #[arg(long)]
    pub real: Option<PathBuf>,
    /// Fake images for a dataset-vs-dataset comparison (dataset folder or image folder).
    #[arg(long)]
    pub fake: Option<PathBuf>,
    /// Folder with the detector TorchScript files (default: $SG2_HOME/detectors).
    #[arg(long)]
    pub detector_dir: Option<PathBuf>,
    /// Number of generated images (overrides the metric's count; the printed name says so).
    #[arg(long)]
    pub num_gen: Option<usize>,
    /// Number of real images (overrides the metric's count).
    #[arg(long)]
    pub num_real: Option<usize>,
    /// Truncation psi for generated images.
    #[arg(long, default_value_t = 1.0)]
    pub trunc: f64,
    /// Batch size for generation and feature extraction.
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
}

pub fn run(_args: Args, _g: &Global) -> Result<()> {
    Err(super::not_implemented("sg2 metrics"))
}
