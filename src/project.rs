//! Projection of an image into a network's W space, as stylegan2-ada-pytorch's `projector.py`: one w (shared by
//! all layers) and the noise inputs are optimised with Adam so that the generated image's VGG16 LPIPS features
//! match the target's, with the official schedules (learning-rate ramp up and cosine ramp down, decaying noise
//! added to w) and the multi-scale noise regulariser.

use crate::image_io::ImageU8;
use crate::metrics::detector::Detector;
use crate::model::{Generator, NoiseMode};
use crate::rng::{randn_tensor, RandomState};
use crate::train::adam::{Adam, AdamParams};
use anyhow::{ensure, Context, Result};
use image::imageops::FilterType;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The official `project()` arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectOptions {
    pub num_steps: usize,
    pub w_avg_samples: usize,
    pub initial_learning_rate: f64,
    pub initial_noise_factor: f64,
    pub lr_rampdown_length: f64,
    pub lr_rampup_length: f64,
    pub noise_ramp_length: f64,
    pub regularize_noise_weight: f64,
    /// libtorch's generator is seeded with it before the noise maps are drawn (the official `--seed`).
    pub seed: u64,
}

impl Default for ProjectOptions {
    fn default() -> Self {
        ProjectOptions {
            num_steps: 1000,
            w_avg_samples: 10000,
            initial_learning_rate: 0.1,
            initial_noise_factor: 0.05,
            lr_rampdown_length: 0.25,
            lr_rampup_length: 0.05,
            noise_ramp_length: 0.75,
            regularize_noise_weight: 1e5,
            seed: 303,
        }
    }
}

/// The seed of the RandomState whose z give the w statistics (fixed in the official code).
pub const W_STATS_SEED: u32 = 123;

/// The target as the official projector prepares it: converted to RGB (to gray for 1-channel networks),
/// center-cropped to a square and resized to the network's resolution with a Lanczos filter (PIL's LANCZOS there).
pub fn load_target(path: &Path, resolution: u32, channels: u32) -> Result<ImageU8> {
    let img = image::open(path).with_context(|| format!("{}: not a readable image", path.display()))?;
    let (w, h) = (img.width(), img.height());
    let s = w.min(h);
    ensure!(s > 0, "{}: empty image", path.display());
    let img = img.crop_imm((w - s) / 2, (h - s) / 2, s, s);
    // PIL returns a copy when the size already matches; Lanczos at scale 1 would only add rounding.
    let img = if s == resolution { img } else { img.resize_exact(resolution, resolution, FilterType::Lanczos3) };
    let (width, height) = (resolution, resolution);
    Ok(if channels == 1 {
        ImageU8 { width, height, channels: 1, data: img.to_luma8().into_raw() }
    } else {
        ImageU8 { width, height, channels: 3, data: img.to_rgb8().into_raw() }
    })
}

/// An HWC uint8 image as a float [1, C, H, W] tensor in 0..255.
fn image_tensor(img: &ImageU8, device: Device) -> Tensor {
    let (h, w, c) = (img.height as i64, img.width as i64, img.channels as i64);
    Tensor::from_slice(&img.data).reshape([1, h, w, c]).permute([0, 3, 1, 2]).to_kind(Kind::Float).to_device(device)
}

/// The mean w of `samples` mapped z drawn from `RandomState(123).randn`, [1, 1, w_dim], and the scalar spread
/// `sqrt(sum((w - w_avg)^2) / samples)`.
pub fn w_stats(g: &Generator, samples: usize, device: Device) -> Result<(Tensor, f64)> {
    ensure!(g.c_dim() == 0, "projection needs an unconditional network (this one has {} classes)", g.c_dim());
    ensure!(samples > 0, "w_avg_samples must be positive");
    let z = randn_tensor(&mut RandomState::new(W_STATS_SEED), &[samples as i64, g.z_dim()]).to_device(device);
    let w = tch::no_grad(|| g.mapping(&z, None, 1.0, None)).narrow(1, 0, 1).to_kind(Kind::Double);
    let w_avg = w.mean_dim(&[0i64][..], true, Kind::Double);
    let w_std = ((&w - &w_avg).square().sum(Kind::Double).double_value(&[]) / samples as f64).sqrt();
    Ok((w_avg.to_kind(Kind::Float), w_std))
}

/// Learning rate and the scale of the noise added to w at `step` (0-based), as the official schedules.
pub fn schedule(step: usize, o: &ProjectOptions, w_std: f64) -> (f64, f64) {
    let t = step as f64 / o.num_steps as f64;
    let w_noise_scale = w_std * o.initial_noise_factor * (1.0 - t / o.noise_ramp_length).max(0.0).powi(2);
    let ramp = ((1.0 - t) / o.lr_rampdown_length).min(1.0);
    let ramp = 0.5 - 0.5 * (ramp * std::f64::consts::PI).cos();
    let ramp = ramp * (t / o.lr_rampup_length).min(1.0);
    (o.initial_learning_rate * ramp, w_noise_scale)
}

/// The noise regulariser: squared autocorrelations of every noise map at shifts of one pixel, repeated on 2x2
/// average-pooled versions down to 8x8.
pub fn noise_regularizer(noise: &[Tensor]) -> Tensor {
    let mut reg = Tensor::zeros([], (Kind::Float, noise[0].device()));
    for n in noise {
        let mut x = n.unsqueeze(0).unsqueeze(0);
        loop {
            reg = reg + (&x * x.roll([1], [3])).mean(Kind::Float).square();
            reg = reg + (&x * x.roll([1], [2])).mean(Kind::Float).square();
            if x.size()[2] <= 8 {
                break;
            }
            x = x.avg_pool2d([2, 2], [2, 2], [0, 0], false, true, None::<i64>);
        }
    }
    reg
}

/// VGG16 LPIPS features of float images in 0..255 (area-downsampled to 256x256 when larger, as the official).
fn features(vgg: &Detector, img: &Tensor) -> Result<Tensor> {
    let img = if img.size()[2] > 256 { img.adaptive_avg_pool2d([256, 256]) } else { img.shallow_clone() };
    let img = if img.size()[1] == 1 { img.repeat([1, 3, 1, 1]) } else { img };
    vgg.call_with_grad(&img, &[("resize_images", false), ("return_lpips", true)])
}

/// One optimisation step's numbers (step counted from 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub step: usize,
    pub dist: f64,
    pub loss: f64,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dist {:<4.2} loss {:<5.2}", self.dist, self.loss)
    }
}

pub struct Projection {
    /// The starting point: the mean w, [1, 1, w_dim].
    pub w_avg: Tensor,
    pub w_std: f64,
    /// w after each step, [num_steps, 1, w_dim] (broadcast to every layer when rendered).
    pub w_steps: Tensor,
}

/// Projects `target` (the network's resolution and channels). The noise maps and the noise added to w come from
/// libtorch's generator, seeded with `o.seed`, in the official order: each noise map, then each step's w noise.
pub fn project(
    g: &Generator,
    vgg: &Detector,
    target: &ImageU8,
    o: &ProjectOptions,
    device: Device,
    mut on_step: impl FnMut(Step),
) -> Result<Projection> {
    let res = g.img_resolution();
    ensure!(
        target.width as i64 == res && target.height as i64 == res && target.channels as i64 == g.img_channels(),
        "target is {}x{}x{}, the network makes {res}x{res}x{}",
        target.width,
        target.height,
        target.channels,
        g.img_channels()
    );
    ensure!(o.num_steps > 0, "num_steps must be positive");
    ensure!(g.c_dim() == 0, "projection needs an unconditional network (this one has {} classes)", g.c_dim());
    // The detector is tried on the target before the (slow) W statistics.
    let target_features = tch::no_grad(|| features(vgg, &image_tensor(target, device)))?;
    vgg.check_lpips(&target_features, 1)?;
    let (w_avg, w_std) = w_stats(g, o.w_avg_samples, device)?;
    tch::manual_seed(o.seed as i64);

    let w_opt = w_avg.copy().set_requires_grad(true);
    let noise: Vec<Tensor> = g
        .synthesis
        .noise_resolutions()
        .iter()
        .map(|&r| Tensor::randn([r, r], (Kind::Float, device)).set_requires_grad(true))
        .collect();
    let mut named = vec![("w".to_string(), w_opt.shallow_clone())];
    named.extend(noise.iter().enumerate().map(|(i, n)| (format!("noise{i}"), n.shallow_clone())));
    let params: Vec<Tensor> = named.iter().map(|(_, t)| t.shallow_clone()).collect();
    let adam_params = AdamParams { lr: o.initial_learning_rate, beta1: 0.9, beta2: 0.999, eps: 1e-8 };
    let mut adam = Adam::new(&named, adam_params);
    let w_steps = Tensor::zeros([o.num_steps as i64, 1, g.w_dim()], (Kind::Float, device));

    for step in 0..o.num_steps {
        let (lr, w_noise_scale) = schedule(step, o, w_std);
        adam.params.lr = lr;
        let w_noise = w_opt.randn_like() * w_noise_scale;
        let ws = (&w_opt + w_noise).repeat([1, g.num_ws(), 1]);
        let synth = g.synthesis_with_noise(&ws, noise.iter().map(Tensor::shallow_clone).collect(), false);
        let synth = (synth.to_kind(Kind::Float) + 1.0) * (255.0 / 2.0);
        let dist = (&target_features - features(vgg, &synth)?).square().sum(Kind::Float);
        let loss = &dist + noise_regularizer(&noise) * o.regularize_noise_weight;
        let grads = Tensor::run_backward(&[&loss], &params, false, false);
        adam.step(&grads);
        let info = Step { step: step + 1, dist: dist.double_value(&[]), loss: loss.double_value(&[]) };
        tch::no_grad(|| {
            w_steps.get(step as i64).copy_(&w_opt.detach().get(0));
            for n in &noise {
                let mut n = n.shallow_clone();
                let m = n.mean(Kind::Float);
                let _ = n.g_sub_(&m);
                let s = n.square().mean(Kind::Float).rsqrt();
                let _ = n.g_mul_(&s);
            }
        });
        ensure!(
            info.loss.is_finite(),
            "step {}: the loss is not finite ({}); the projection diverged",
            info.step,
            info.loss
        );
        on_step(info);
    }
    Ok(Projection { w_avg, w_std, w_steps })
}

/// The image of w ([1, w_dim] or [1, 1, w_dim], broadcast to every layer; or [1, num_ws, w_dim]) with the
/// network's stored noise, converted as the official projector saves it: `(x + 1) * 255/2`, clamped, truncated.
pub fn render(g: &Generator, w: &Tensor) -> ImageU8 {
    let w = w.reshape([1, -1, g.w_dim()]);
    let ws = if w.size()[1] == 1 { w.repeat([1, g.num_ws(), 1]) } else { w };
    let img = tch::no_grad(|| g.synthesis(&ws, NoiseMode::Const));
    let u8 = ((img.to_kind(Kind::Float) + 1.0) * (255.0 / 2.0))
        .permute([0, 2, 3, 1])
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
        .to_device(Device::Cpu);
    ImageU8::from_nhwc(&u8, 0)
}

/// Target and rendering side by side: a frame of the optimisation video.
pub fn side_by_side(a: &ImageU8, b: &ImageU8) -> ImageU8 {
    let (a, b) = if a.channels == b.channels {
        (a.clone(), b.clone())
    } else {
        (a.clone().with_channels(3), b.clone().with_channels(3))
    };
    let row = |img: &ImageU8, y: usize| {
        let n = (img.width * img.channels) as usize;
        img.data[y * n..(y + 1) * n].to_vec()
    };
    let data = (0..a.height as usize).flat_map(|y| [row(&a, y), row(&b, y)].concat()).collect();
    ImageU8 { width: a.width + b.width, height: a.height, channels: a.channels, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_the_official_ramps() {
        let o = ProjectOptions::default();
        let (lr0, n0) = schedule(0, &o, 2.0);
        assert_eq!(lr0, 0.0); // the ramp-up starts at zero
        assert!((n0 - 2.0 * 0.05).abs() < 1e-15);
        let (lr, _) = schedule(50, &o, 2.0); // t = 0.05: end of ramp-up, before ramp-down
        assert!((lr - 0.1).abs() < 1e-12);
        let (lr, n) = schedule(875, &o, 2.0); // t = 0.875: half-way down the cosine, noise off after 0.75
        assert!((lr - 0.05).abs() < 1e-12 && n == 0.0);
    }

    #[test]
    fn regularizer_of_a_checkerboard() {
        // +-1 alternating: every shifted product is -1, so each term is 1 at 16x16; pooled maps are zero.
        let x = Tensor::from_slice(
            &(0..256).map(|i| if (i / 16 + i % 16) % 2 == 0 { 1f32 } else { -1. }).collect::<Vec<_>>(),
        )
        .reshape([16, 16]);
        let r = noise_regularizer(&[x]).double_value(&[]);
        assert!((r - 2.0).abs() < 1e-6, "{r}");
    }

    #[test]
    fn side_by_side_concatenates_rows() {
        let a = ImageU8 { width: 1, height: 2, channels: 1, data: vec![1, 2] };
        let b = ImageU8 { width: 2, height: 2, channels: 1, data: vec![3, 4, 5, 6] };
        assert_eq!(side_by_side(&a, &b).data, [1, 3, 4, 2, 5, 6]);
    }
}
