//! `sg2 project`: find the w (and noise) that reproduce a target image, as the official `projector.py`.

use super::Global;
use crate::image_io::save_gif_with;
use crate::metrics::detector::{Detector, VGG16};
use crate::model::checkpoint::load_generator;
use crate::project::{load_target, project, render, side_by_side, ProjectOptions};
use anyhow::{ensure, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Example:\n  sg2 project --network cat.safetensors --target mycat.jpg --outdir proj --save-video"
)]
pub struct Args {
    /// Network checkpoint (.safetensors); its G_ema is used. Unconditional networks only.
    #[arg(long)]
    pub network: PathBuf,
    /// Target image (PNG, JPEG, WebP): center-cropped to a square and resized to the network's resolution
    /// (Lanczos); gray for 1-channel networks.
    #[arg(long)]
    pub target: PathBuf,
    /// Optimisation steps (1 to 100000).
    #[arg(long, default_value_t = 1000)]
    pub num_steps: usize,
    /// Seed of libtorch's generator, which draws the initial noise maps and the noise added to w at each step.
    #[arg(long, default_value_t = 303)]
    pub seed: u64,
    /// Also write proj.gif: target and projection side by side after every step, 10 frames per second.
    #[arg(long)]
    pub save_video: bool,
    /// Output folder for target.png, proj.png, projected_w.npz (and proj.gif).
    #[arg(long)]
    pub outdir: PathBuf,
    /// Folder holding the VGG16 detector vgg16.pt (default: $SG2_HOME/detectors, as sg2 metrics).
    #[arg(long)]
    pub detector_dir: Option<PathBuf>,
}

pub fn run(a: Args, g: &Global) -> Result<()> {
    let device = g.setup()?;
    // Every step's w is kept (as the official keeps them for the video): the bound keeps that in memory.
    ensure!((1..=100_000).contains(&a.num_steps), "--num-steps {}: must be from 1 to 100000", a.num_steps);
    println!("Loading networks from \"{}\"...", a.network.display());
    let (_cfg, _vs, net) = load_generator(&a.network, device)?;
    ensure!(
        net.c_dim() == 0,
        "{}: projection needs an unconditional network (this one has {} classes)",
        a.network.display(),
        net.c_dim()
    );
    let vgg = Detector::find_and_load(a.detector_dir.as_deref(), VGG16, device)?;
    let (res, channels) = (net.img_resolution() as u32, net.img_channels() as u32);
    let target = load_target(&a.target, res, channels)?;
    // Checked now, made when there is something to write (a failed projection leaves no empty folder).
    crate::util::check_output_file(&a.outdir.join("proj.png"), "--outdir", &[])?;
    let opts = ProjectOptions { num_steps: a.num_steps, seed: a.seed, ..ProjectOptions::default() };
    println!("Computing W midpoint and stddev using {} samples...", opts.w_avg_samples);

    // A bar on a terminal; otherwise one line per step, as the official projector prints them.
    let bar = if std::io::stderr().is_terminal() {
        let pb = ProgressBar::new(a.num_steps as u64);
        pb.set_style(
            ProgressStyle::with_template("step {pos:>4}/{len}: {msg}  {bar:30} {elapsed} eta {eta}")
                .expect("valid template"),
        );
        Some(pb)
    } else {
        None
    };
    let start = std::time::Instant::now();
    let p = project(&net, &vgg, &target, &opts, device, |s| match &bar {
        Some(pb) => {
            pb.set_message(s.to_string());
            pb.set_position(s.step as u64);
        }
        None => println!("step {:>4}/{}: {s}", s.step, a.num_steps),
    })?;
    if let Some(pb) = bar {
        pb.finish();
    }
    println!("Elapsed: {:.1} s", start.elapsed().as_secs_f64());
    crate::util::create_out_dir(&a.outdir)?;

    if a.save_video {
        let gif = a.outdir.join("proj.gif");
        println!("Saving optimization progress video \"{}\"", gif.display());
        save_gif_with(&gif, a.num_steps, 10, |i| Ok(side_by_side(&target, &render(&net, &p.w_steps.get(i as i64)))))?;
    }
    target.save_png(a.outdir.join("target.png"))?;
    let w = p.w_steps.get(a.num_steps as i64 - 1).reshape([1, 1, -1]).repeat([1, net.num_ws(), 1]);
    render(&net, &w).save_png(a.outdir.join("proj.png"))?;
    crate::npz::write_npz(&a.outdir.join("projected_w.npz"), &[("w", &w)])?;
    println!("Saved target.png, proj.png and projected_w.npz in {}", a.outdir.display());
    Ok(())
}
