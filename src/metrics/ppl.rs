//! Perceptual path length (the official `perceptual_path_length.py`).
//!
//! Per sample: t ~ U(0, 1) (`full`) or t = 0 (`end`); two latents z0, z1; interpolation at t and t + epsilon, by
//! slerp in z or lerp in w; both images synthesised with the same freshly drawn noise; optional centre crop
//! (rows 3/8..7/8, columns 2/8..6/8 of the image); images above 256 pixels area-averaged down to 256 by the integer
//! factor `resolution / 256`; [-1, 1] mapped to [0, 255] (unquantised); the LPIPS distance of the pair from VGG16
//! (`resize_images=False, return_lpips=True`: squared difference of its outputs, summed) divided by epsilon^2.
//! Distances outside the 1st (`lower`) to 99th (`higher`) percentiles are dropped and the rest averaged.

use super::detector::Detector;
use super::features::random_labels;
use super::shard::Shard;
use crate::data::Dataset;
use crate::dist::Dist;
use crate::model::{slerp, Generator, Space};
use crate::util::{progress_bar, Progress};
use anyhow::{ensure, Result};
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sampling {
    Full,
    End,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PplSpec {
    pub space: Space,
    pub sampling: Sampling,
    pub crop: bool,
    pub epsilon: f64,
}

/// Synthesised images in [-1, 1] -> the VGG16 input of the official: optional centre crop, area reduction to 256 by
/// the factor `resolution / 256`, [0, 255], grayscale repeated to RGB.
pub fn lpips_input(img: &Tensor, crop: bool, resolution: i64) -> Result<Tensor> {
    let mut img = img.to_kind(Kind::Float);
    if crop {
        let (h, w) = (img.size()[2], img.size()[3]);
        ensure!(h == w, "PPL crop needs square images, got {h}x{w}");
        let c = h / 8;
        img = img.narrow(2, c * 3, c * 4).narrow(3, c * 2, c * 4);
    }
    let factor = resolution / 256;
    if factor > 1 {
        let s = img.size();
        let shape = [s[0], s[1], s[2] / factor, factor, s[3] / factor, factor];
        img = img.reshape(shape).mean_dim([3i64, 5].as_slice(), false, Kind::Float);
    }
    let img = (img + 1.0) * (255.0 / 2.0);
    Ok(if img.size()[1] == 1 { img.repeat([1, 3, 1, 1]) } else { img })
}

/// Distances of one batch of `n` samples.
pub fn ppl_batch(g: &Generator, vgg: &Detector, spec: &PplSpec, labels: Option<&Dataset>, n: i64) -> Result<Tensor> {
    let dev = vgg.device;
    let eps = spec.epsilon;
    let t = Tensor::rand([n], (Kind::Float, dev)) * if spec.sampling == Sampling::Full { 1.0 } else { 0.0 };
    let z = Tensor::randn([2 * n, g.z_dim()], (Kind::Float, dev));
    let (z0, z1) = (z.narrow(0, 0, n), z.narrow(0, n, n));
    let c = random_labels(g, labels, n, dev)?;
    let c2 = c.as_ref().map(|c| Tensor::cat(&[c, c], 0));
    let ws = tch::no_grad(|| match spec.space {
        Space::W => {
            let w = g.mapping(&z, c2.as_ref(), 1.0, None);
            let (w0, w1) = (w.narrow(0, 0, n), w.narrow(0, n, n));
            let tt = t.view([n, 1, 1]);
            Tensor::cat(&[w0.lerp_tensor(&w1, &tt), w0.lerp_tensor(&w1, &(&tt + eps))], 0)
        }
        Space::Z => {
            let tt = t.view([n, 1]);
            let zt = Tensor::cat(&[slerp(&z0, &z1, &tt), slerp(&z0, &z1, &(&tt + eps))], 0);
            g.mapping(&zt, c2.as_ref(), 1.0, None)
        }
    });
    // One fresh noise map per layer, shared by every image of the batch (the official randomises the buffers).
    let noise: Vec<Tensor> =
        g.synthesis.noise_resolutions().iter().map(|&r| Tensor::randn([1, 1, r, r], (Kind::Float, dev))).collect();
    // In fp32 even where the network has fp16 layers, as the official (`force_fp32=True`).
    let img = tch::no_grad(|| g.synthesis_with_noise(&ws, noise, true));
    let img = lpips_input(&img, spec.crop, g.img_resolution())?;
    let lp = vgg.call(&img, &[("resize_images", false), ("return_lpips", true)])?;
    vgg.check_lpips(&lp, img.size()[0])?;
    let (a, b) = (lp.narrow(0, 0, n), lp.narrow(0, n, n));
    Ok((a - b).square().sum_dim_intlist([1i64].as_slice(), false, Kind::Float) / (eps * eps))
}

/// numpy's `percentile(x, q, method=lower|higher)` on sorted values.
pub fn percentile_sorted(sorted: &[f64], q: f64, higher: bool) -> f64 {
    let n = sorted.len();
    // numpy's virtual index for the linear family with alpha = beta = 1, `n*q + (alpha + q*(1-alpha-beta)) - 1`,
    // evaluated in the same order so the floor/ceil lands on the same element.
    let q = q / 100.0;
    let (alpha, beta) = (1.0f64, 1.0f64);
    let v = n as f64 * q + (alpha + q * (1.0 - alpha - beta)) - 1.0;
    let i = if higher { v.ceil() } else { v.floor() };
    sorted[(i.max(0.0) as usize).min(n - 1)]
}

/// The mean of the distances between the 1st (`lower`) and 99th (`higher`) percentiles, inclusive.
pub fn filtered_mean(dist: &[f64]) -> Result<f64> {
    ensure!(!dist.is_empty(), "PPL: no samples");
    let mut s = dist.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let lo = percentile_sorted(&s, 1.0, false);
    let hi = percentile_sorted(&s, 99.0, true);
    let kept: Vec<f64> = dist.iter().copied().filter(|&d| d >= lo && d <= hi).collect();
    Ok(kept.iter().sum::<f64>() / kept.len() as f64)
}

/// The random draws of [`ppl_batch`] without the work (another rank's batch): t, z, labels and the noise, in
/// its order, so the random stream stays where one process has it.
pub fn skip_ppl_batch(g: &Generator, vgg: &Detector, labels: Option<&Dataset>, n: i64) -> Result<()> {
    let dev = vgg.device;
    let _t = Tensor::rand([n], (Kind::Float, dev));
    let _z = Tensor::randn([2 * n, g.z_dim()], (Kind::Float, dev));
    random_labels(g, labels, n, dev)?;
    for r in g.synthesis.noise_resolutions() {
        let _noise = Tensor::randn([1, 1, r, r], (Kind::Float, dev));
    }
    Ok(())
}

/// PPL over `num_samples` samples in batches of `batch`, the batches shared over `dist`'s ranks (None: one
/// process); every rank returns the value of the full set.
#[allow(clippy::too_many_arguments)]
pub fn ppl(
    g: &Generator,
    vgg: &Detector,
    spec: &PplSpec,
    labels: Option<&Dataset>,
    num_samples: usize,
    batch: usize,
    show: bool,
    dist: Option<&Dist>,
) -> Result<f64> {
    ensure!(batch >= 1 && num_samples >= 1, "PPL needs a positive batch size and sample count");
    let shard = Shard::new(dist, num_samples, batch);
    let pb = progress_bar(Progress::Count, num_samples as u64, "ppl sampling", show && shard.is_main());
    let mut mine = vec![];
    let (mut done, mut k) = (0, 0);
    while done < num_samples {
        let n = batch.min(num_samples - done);
        if shard.owns(k) {
            mine.push(ppl_batch(g, vgg, spec, labels, n as i64)?.unsqueeze(1));
        } else {
            skip_ppl_batch(g, vgg, labels, n as i64)?;
        }
        done += n;
        k += 1;
        pb.set_position(done as u64);
    }
    pb.finish_and_clear();
    // float32 distances, exact in float64 as one process reads them.
    let all = shard.gather(mine)?;
    filtered_mean(&Vec::<f64>::try_from(&all.flatten(0, -1).to_kind(Kind::Double))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_and_area_downsampling_as_the_official() {
        // A 1024x1024 grayscale image whose value is its row index / 1024: the crop keeps rows 384..896 and columns
        // 256..768; the factor-4 area reduction averages rows 4i..4i+3 (mean row index 4i + 1.5).
        let rows = Tensor::arange(1024, (Kind::Float, tch::Device::Cpu)) / 1024.0;
        let img = rows.view([1, 1, 1024, 1]).expand([1, 1, 1024, 1024], false) * 2.0 - 1.0;
        let out = lpips_input(&img, true, 1024).unwrap();
        assert_eq!(out.size(), [1, 3, 128, 128]);
        for (i, r) in [(0i64, 384.0), (5, 404.0), (127, 892.0)] {
            let want = (r + 1.5) / 1024.0 * 255.0;
            let got = out.double_value(&[0, 2, i, 7]);
            assert!((got - want).abs() < 1e-3, "row {i}: {got} vs {want}");
        }
        // No crop, 256 and below: only the range changes.
        let small = Tensor::from_slice(&[-1.0f32, 0.0, 1.0, 0.5]).view([1, 1, 2, 2]).repeat([1, 3, 1, 1]);
        let out = lpips_input(&small, false, 2).unwrap();
        assert_eq!(Vec::<f32>::try_from(&out.flatten(0, -1).narrow(0, 0, 4)).unwrap(), [0.0, 127.5, 255.0, 191.25]);
    }

    #[test]
    fn percentiles_follow_numpy_lower_and_higher() {
        // np.percentile(np.arange(101), 1, method='lower') == 1; 99 'higher' == 99; n = 10: 0 and 9.
        let a: Vec<f64> = (0..101).map(f64::from).collect();
        assert_eq!(percentile_sorted(&a, 1.0, false), 1.0);
        assert_eq!(percentile_sorted(&a, 99.0, true), 99.0);
        let b: Vec<f64> = (0..10).map(f64::from).collect();
        assert_eq!(percentile_sorted(&b, 1.0, false), 0.0);
        assert_eq!(percentile_sorted(&b, 99.0, true), 9.0);
        // Outliers beyond the percentiles are dropped: 200 values 1.0 plus extremes.
        let mut d = vec![1.0; 200];
        d[0] = -1e9;
        d[1] = 1e9;
        assert_eq!(filtered_mean(&d).unwrap(), 1.0);
    }
}
