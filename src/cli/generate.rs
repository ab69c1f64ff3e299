//! `sg2 generate`, `sg2 style-mix`, `sg2 interpolate`.

use super::Global;
use crate::generate::{
    class_tensor, generate_projected, generate_seeds, interpolation_frames, style_mix_grid, GenOptions, Noise,
};
use crate::image_io::{check_extension, STILL};
use crate::model::checkpoint::load_generator;
use crate::model::{NoiseMode, Space};
use crate::seeds::{parse_index_list, parse_seeds};
use crate::util::{progress_bar, Progress};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Network checkpoint (.safetensors).
    #[arg(long)]
    pub network: PathBuf,
    /// Seeds: "6600-6605", "1,5,10-12".
    #[arg(long, required_unless_present = "projected_w")]
    pub seeds: Option<String>,
    /// Instead of seeds: render the ws of a projection (`projected_w.npz` of `sg2 project` or the official
    /// projector, array `w` [N, num_ws, w_dim]) to projNN.png; --trunc and --class do not apply.
    #[arg(long, conflicts_with_all = ["seeds", "class_idx"])]
    pub projected_w: Option<PathBuf>,
    /// Truncation psi (1 = none; a warning beyond +-2).
    #[arg(long = "trunc", default_value_t = 1.0)]
    pub truncation_psi: f64,
    /// Noise: const (stored noise), random, none, or tf (drawn from the seed's RandomState after z, as the TF tool).
    #[arg(long, value_enum, default_value = "const")]
    pub noise_mode: Noise,
    /// Class label for conditional networks.
    #[arg(long = "class")]
    pub class_idx: Option<usize>,
    /// Output folder for seedNNNN.png (seeds below 1000 are zero-padded to four digits, as the official).
    #[arg(long, default_value = "out")]
    pub outdir: PathBuf,
    /// Images per forward pass (1 to 1024).
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Also write all images as one grid: .png, or .jpg for JPEG (at most 1 GiB of pixels).
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
    /// Truncation psi (1 = none; a warning beyond +-2).
    #[arg(long = "trunc", default_value_t = 1.0)]
    pub truncation_psi: f64,
    /// Noise mode.
    #[arg(long, value_enum, default_value = "const")]
    pub noise_mode: NoiseMode,
    /// Class label for conditional networks.
    #[arg(long = "class")]
    pub class_idx: Option<usize>,
    /// Output image: .png, or .jpg for JPEG (the figure may hold at most 1 GiB of pixels).
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
    /// Frames between consecutive key seeds (all frames together may hold at most 1 GiB of pixels).
    #[arg(long, default_value_t = 60)]
    pub frames: usize,
    /// Interpolation space: w (lerp) or z (slerp).
    #[arg(long, value_enum, default_value = "w")]
    pub space: Space,
    /// Truncation psi (1 = none; a warning beyond +-2).
    #[arg(long = "trunc", default_value_t = 1.0)]
    pub truncation_psi: f64,
    /// Noise mode (random draws new noise for every frame).
    #[arg(long, value_enum, default_value = "const")]
    pub noise_mode: NoiseMode,
    /// Class label for conditional networks.
    #[arg(long = "class")]
    pub class_idx: Option<usize>,
    /// Frames per second of the GIF.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// Output GIF.
    #[arg(long, default_value = "out/walk.gif")]
    pub out: PathBuf,
}

fn options(psi: f64, noise: Noise, class_idx: Option<usize>, batch: usize) -> Result<GenOptions> {
    super::check_psi(psi)?;
    super::check_batch(batch)?;
    Ok(GenOptions { truncation_psi: psi, noise, class_idx, batch })
}

/// Refuses an output of `images` of the network's images in memory above the limit.
fn ensure_fits(what: &str, net: &crate::model::Generator, images: u64, cols: u64, rows: u64) -> Result<()> {
    let (r, c) = (net.img_resolution() as u64, net.img_channels() as u64);
    crate::image_io::ensure_fits(what, images, cols.saturating_mul(r), rows.saturating_mul(r), c)
}

/// `generate --projected-w`: one projNN.png per w, as the official generate.py names them.
fn run_projected(a: &GenerateArgs, w_path: &Path, device: tch::Device) -> Result<()> {
    let mode = match a.noise_mode {
        Noise::Mode(m) => m,
        Noise::Tf => bail!("--noise-mode tf draws the noise from a seed; a projected w has none"),
    };
    let (_cfg, _vs, net) = load_generator(&a.network, device)?;
    let ws = crate::npz::read_npz(w_path, "w")?;
    crate::generate::check_ws(&net, &ws).with_context(|| w_path.display().to_string())?;
    let mut all = vec![];
    generate_projected(&net, &ws, mode, device, |i, img| {
        // Made with the first picture: a w that fails leaves no empty folder.
        if i == 0 {
            crate::util::create_out_dir(&a.outdir)?;
        }
        let path = a.outdir.join(format!("proj{i:02}.png"));
        println!("Generating {} from {}", path.display(), w_path.display());
        img.save_png(&path)?;
        all.push(img);
        Ok(())
    })
    .with_context(|| w_path.display().to_string())?;
    save_grid(&all, a.grid.as_deref())
}

/// Tiles `images` in a near-square grid at `path`, when one was asked for.
fn save_grid(images: &[crate::image_io::ImageU8], path: Option<&std::path::Path>) -> Result<()> {
    if let Some(path) = path {
        let cols = (images.len() as f64).sqrt().ceil() as usize;
        crate::image_io::grid(images, cols.max(1))?.save(path)?;
        println!("Grid: {}", path.display());
    }
    Ok(())
}

pub fn run_generate(a: GenerateArgs, g: &Global) -> Result<()> {
    let device = g.setup()?;
    if let Some(grid) = &a.grid {
        crate::util::check_output_file(grid, "--grid", &[])?;
        check_extension(grid, "--grid", STILL)?;
    }
    if let Some(w_path) = &a.projected_w {
        return run_projected(&a, w_path, device);
    }
    let listed = parse_seeds(a.seeds.as_deref().unwrap_or_default()).context("--seeds")?;
    // One file per seed: a seed named twice would be rendered twice into the same file.
    let mut seen = std::collections::HashSet::new();
    let seeds: Vec<u32> = listed.iter().copied().filter(|s| seen.insert(*s)).collect();
    if seeds.len() < listed.len() {
        eprintln!(
            "note: --seeds names {} seed(s) more than once; each is generated once ({} images)",
            listed.len() - seeds.len(),
            seeds.len()
        );
    }
    let opts = options(a.truncation_psi, a.noise_mode, a.class_idx, a.batch)?;
    let (_cfg, _vs, net) = load_generator(&a.network, device)?;
    // Checks the label and the grid's size before anything is written.
    class_tensor(&net, a.class_idx, 1, device)?;
    if a.grid.is_some() {
        let cols = (seeds.len() as f64).sqrt().ceil() as u64;
        ensure_fits("--seeds with --grid", &net, 1, cols, (seeds.len() as u64).div_ceil(cols.max(1)))?;
    }
    crate::util::create_out_dir(&a.outdir)?;
    let pb = progress_bar(Progress::Count, seeds.len() as u64, "images", seeds.len() >= 32);
    let mut all = vec![];
    let total = seeds.len();
    let mut idx = 0;
    generate_seeds(&net, &seeds, &opts, device, |seed, img| {
        pb.suspend(|| println!("Generating image for seed {seed} ({idx}/{total}) ..."));
        let path = a.outdir.join(format!("seed{seed:04}.png"));
        img.save_png(&path)?;
        pb.inc(1);
        idx += 1;
        if a.grid.is_some() {
            all.push(img);
        }
        Ok(())
    })?;
    pb.finish_and_clear();
    save_grid(&all, a.grid.as_deref())
}

pub fn run_style_mix(a: StyleMixArgs, g: &Global) -> Result<()> {
    let device = g.setup()?;
    let rows = parse_seeds(&a.rows).context("--rows")?;
    let cols = parse_seeds(&a.cols).context("--cols")?;
    let styles = parse_index_list(&a.styles).context("--styles")?;
    let opts = options(a.truncation_psi, Noise::Mode(a.noise_mode), a.class_idx, 1)?;
    crate::util::check_output_file(&a.out, "--out", &[])?;
    check_extension(&a.out, "--out", STILL)?;
    let (_cfg, _vs, net) = load_generator(&a.network, device)?;
    class_tensor(&net, a.class_idx, 1, device)?;
    ensure_fits("--rows/--cols", &net, 1, cols.len() as u64 + 1, rows.len() as u64 + 1)?;
    let shown = if styles.len() <= 32 { format!("{styles:?}") } else { format!("{} layers", styles.len()) };
    println!("Generating style-mix grid: {} rows x {} columns, styles {shown} ...", rows.len(), cols.len());
    let grid = style_mix_grid(&net, &rows, &cols, &styles, &opts, device)?;
    grid.save(&a.out)?;
    println!("Saved {}", a.out.display());
    Ok(())
}

pub fn run_interpolate(a: InterpolateArgs, g: &Global) -> Result<()> {
    let device = g.setup()?;
    let seeds = parse_seeds(&a.seeds).context("--seeds")?;
    if a.fps == 0 || a.fps > 100 {
        bail!("--fps must be in 1..=100");
    }
    let opts = options(a.truncation_psi, Noise::Mode(a.noise_mode), a.class_idx, 1)?;
    crate::util::check_output_file(&a.out, "--out", &[])?;
    check_extension(&a.out, "--out", &[image::ImageFormat::Gif])?;
    if a.frames == 0 {
        bail!("--frames 0: must be >= 1");
    }
    let (_cfg, _vs, net) = load_generator(&a.network, device)?;
    class_tensor(&net, a.class_idx, 1, device)?;
    ensure_fits("--seeds/--frames", &net, (seeds.len() as u64).saturating_mul(a.frames as u64), 1, 1)?;
    let pb = progress_bar(Progress::Count, (seeds.len() * a.frames) as u64, "frames", true);
    let frames = interpolation_frames(&net, &seeds, a.frames, a.space, &opts, device, |_, _| pb.inc(1))?;
    pb.finish_and_clear();
    crate::image_io::save_gif(&a.out, &frames, a.fps)?;
    println!("Saved {} ({} frames)", a.out.display(), frames.len());
    Ok(())
}
