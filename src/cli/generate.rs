//! `sg2 generate`, `sg2 style-mix`, `sg2 interpolate`.

use super::Global;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Network checkpoint (.safetensors).
    #[arg(long)]
    pub network: PathBuf,
    /// Seeds: "6600-6605", "1,5,10-12".
    #[arg(long)]
    pub seeds: String,
    /// Truncation psi (1 = none).
    #[arg(long = "trunc", default_value_t = 1.0)]
    pub truncation_psi: f64,
    /// Noise: const (stored noise), random, none, or tf (drawn from the seed's RandomState after z, as the TF tool).
    #[arg(long, default_value = "const")]
    pub noise_mode: String,
    /// Class label for conditional networks.
    #[arg(long = "class")]
    pub class_idx: Option<usize>,
    /// Output folder for seedNNNN.png.
    #[arg(long, default_value = "out")]
    pub outdir: PathBuf,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Also write all images as one grid PNG.
    #[arg(long)]
    pub grid: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct StyleMixArgs {
    /// Network checkpoint (.safetensors).
    #[arg(long)]
    pub network: PathBuf,
    /// Row seeds (their w provides the layers not in --styles).
    #[arg(long)]
    pub rows: String,
    /// Column seeds (their w provides the layers in --styles).
    #[arg(long)]
    pub cols: String,
    /// Layers (w indices) taken from the column seed, e.g. 0-6.
    #[arg(long, default_value = "0-6")]
    pub styles: String,
    /// Truncation psi.
    #[arg(long = "trunc", default_value_t = 1.0)]
    pub truncation_psi: f64,
    /// Noise mode: const, random or none.
    #[arg(long, default_value = "const")]
    pub noise_mode: String,
    /// Output PNG.
    #[arg(long, default_value = "out/stylemix.png")]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct InterpolateArgs {
    /// Network checkpoint (.safetensors).
    #[arg(long)]
    pub network: PathBuf,
    /// Key seeds visited in order (the walk loops back to the first).
    #[arg(long)]
    pub seeds: String,
    /// Frames between consecutive key seeds.
    #[arg(long, default_value_t = 60)]
    pub frames: usize,
    /// Interpolation space: w (lerp) or z (slerp).
    #[arg(long, default_value = "w")]
    pub space: String,
    /// Truncation psi.
    #[arg(long = "trunc", default_value_t = 1.0)]
    pub truncation_psi: f64,
    /// Noise mode: const or none.
    #[arg(long, default_value = "const")]
    pub noise_mode: String,
    /// Frames per second of the GIF.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Output GIF.
    #[arg(long, default_value = "out/walk.gif")]
    pub out: PathBuf,
}

pub fn run_generate(_a: GenerateArgs, _g: &Global) -> Result<()> {
    Err(super::not_implemented("sg2 generate"))
}
pub fn run_style_mix(_a: StyleMixArgs, _g: &Global) -> Result<()> {
    Err(super::not_implemented("sg2 style-mix"))
}
pub fn run_interpolate(_a: InterpolateArgs, _g: &Global) -> Result<()> {
    Err(super::not_implemented("sg2 interpolate"))
}
