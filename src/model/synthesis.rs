//! The official `SynthesisNetwork`: a learned 4x4 constant refined by modulated convolutions up to the output
//! resolution, with per-layer noise and toRGB outputs summed across resolutions (`skip`).

use crate::config::{Architecture, ModelConfig};
use crate::nn::layers::{register_filter, ConvSpec};
use crate::nn::ops::{channels_last_for, modulated_conv2d, upsample2d, with_layout, BiasAct, ModConvSpec};
use crate::nn::{Act, Conv2dLayer, FullyConnected, ModConv};
use tch::nn::{Init, Path};
use tch::{Kind, Tensor};

/// The official `noise_mode` (`--noise-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NoiseMode {
    /// Each layer's stored `noise_const` buffer times its strength.
    Const,
    /// Fresh Gaussian noise on every call (training).
    Random,
    /// No noise.
    None,
}

/// Where a synthesis layer sits: its channels, its output resolution and its upsampling factor.
struct LayerShape {
    in_ch: i64,
    out_ch: i64,
    resolution: i64,
    up: i64,
}

/// One modulated 3x3 convolution (`SynthesisLayer`).
#[derive(Debug)]
pub struct SynthesisLayer {
    pub affine: FullyConnected,
    pub weight: Tensor,
    pub bias: Tensor,
    pub noise_strength: Tensor,
    pub noise_const: Tensor,
    resample_filter: Tensor,
    resolution: i64,
    up: i64,
    conv_clamp: Option<f64>,
}

impl SynthesisLayer {
    fn new(p: &Path, cfg: &ModelConfig, shape: LayerShape) -> Self {
        let LayerShape { in_ch, out_ch, resolution: res, up } = shape;
        let affine = FullyConnected::new(&(p / "affine"), cfg.w_dim as i64, in_ch, true, Act::Linear, 1.0, 1.0);
        let resample_filter = register_filter(p, &cfg.resample_filter);
        let weight = p.var("weight", &[out_ch, in_ch, 3, 3], Init::Randn { mean: 0.0, stdev: 1.0 });
        let mut noise_const = p.zeros_no_train("noise_const", &[res, res]);
        tch::no_grad(|| noise_const.copy_(&Tensor::randn([res, res], (Kind::Float, noise_const.device()))));
        let noise_strength = p.var("noise_strength", &[], Init::Const(0.0));
        let bias = p.var("bias", &[out_ch], Init::Const(0.0));
        SynthesisLayer {
            affine,
            weight,
            bias,
            noise_strength,
            noise_const,
            resample_filter,
            resolution: res,
            up,
            conv_clamp: cfg.conv_clamp,
        }
    }

    /// Explicit noise (e.g. drawn from a numpy RandomState) replaces the mode when given: [N or 1, 1, res, res].
    fn forward(&self, x: &Tensor, w: &Tensor, noise: &LayerNoise, mode: ModConv, gain: f64) -> Tensor {
        let styles = self.affine.forward(w);
        let noise = match noise {
            LayerNoise::Mode(NoiseMode::Const) => Some(&self.noise_const * &self.noise_strength),
            LayerNoise::Mode(NoiseMode::Random) => {
                let n = x.size()[0];
                let r = Tensor::randn([n, 1, self.resolution, self.resolution], (Kind::Float, x.device()));
                Some(r * &self.noise_strength)
            }
            LayerNoise::Mode(NoiseMode::None) => None,
            LayerNoise::Given(t) => Some(t * &self.noise_strength),
        };
        let spec = ModConvSpec {
            up: self.up,
            padding: 1,
            resample_filter: Some(&self.resample_filter),
            demodulate: true,
            flip_weight: self.up == 1,
            mode,
        };
        let post = BiasAct {
            bias: Some(&self.bias),
            act: Act::Lrelu,
            gain: Act::Lrelu.def_gain() * gain,
            clamp: self.conv_clamp.map(|c| c * gain),
        };
        modulated_conv2d(x, &self.weight, &styles, noise.as_ref(), &spec, &post)
    }
}

/// Noise for one layer: a mode, or an explicit tensor.
pub enum LayerNoise {
    Mode(NoiseMode),
    Given(Tensor),
}

/// The official `ToRGBLayer`: a 1x1 modulated convolution without demodulation.
#[derive(Debug)]
pub struct ToRgbLayer {
    pub affine: FullyConnected,
    pub weight: Tensor,
    pub bias: Tensor,
    weight_gain: f64,
    conv_clamp: Option<f64>,
}

impl ToRgbLayer {
    fn new(p: &Path, in_ch: i64, out_ch: i64, w_dim: i64, clamp: Option<f64>) -> Self {
        let affine = FullyConnected::new(&(p / "affine"), w_dim, in_ch, true, Act::Linear, 1.0, 1.0);
        let weight = p.var("weight", &[out_ch, in_ch, 1, 1], Init::Randn { mean: 0.0, stdev: 1.0 });
        let bias = p.var("bias", &[out_ch], Init::Const(0.0));
        ToRgbLayer { affine, weight, bias, weight_gain: 1.0 / (in_ch as f64).sqrt(), conv_clamp: clamp }
    }

    fn forward(&self, x: &Tensor, w: &Tensor, mode: ModConv) -> Tensor {
        let styles = self.affine.forward(w) * self.weight_gain;
        let spec = ModConvSpec { up: 1, padding: 0, resample_filter: None, demodulate: false, flip_weight: true, mode };
        let post = BiasAct { bias: Some(&self.bias), act: Act::Linear, gain: 1.0, clamp: self.conv_clamp };
        modulated_conv2d(x, &self.weight, &styles, None, &spec, &post)
    }
}

/// A block's compute dtype: fp16 for the top `num_fp16_res` resolutions on CUDA unless `force_fp32`; else fp32.
fn block_dtype(use_fp16: bool, cuda: bool, force_fp32: bool) -> Kind {
    if use_fp16 && cuda && !force_fp32 {
        Kind::Half
    } else {
        Kind::Float
    }
}

/// The official `SynthesisBlock` at one resolution.
#[derive(Debug)]
pub struct SynthesisBlock {
    pub resolution: i64,
    pub constant: Option<Tensor>,
    pub conv0: Option<SynthesisLayer>,
    pub conv1: SynthesisLayer,
    pub torgb: Option<ToRgbLayer>,
    skip: Option<Conv2dLayer>,
    resample_filter: Tensor,
    architecture: Architecture,
    use_fp16: bool,
    pub num_conv: i64,
    pub num_torgb: i64,
}

impl SynthesisBlock {
    /// `x`, `img` from the block below (None at 4x4); `ws` [N, num_conv + num_torgb, w_dim]; `noise` one per conv.
    fn forward(
        &self,
        x: Option<&Tensor>,
        img: Option<&Tensor>,
        ws: &Tensor,
        noise: [&LayerNoise; 2],
        mode: ModConv,
        force_fp32: bool,
    ) -> (Tensor, Option<Tensor>) {
        let dtype = block_dtype(self.use_fp16, ws.device().is_cuda(), force_fp32);
        // The official block fuses the modulation only for fp32 (or a batch of one) when not training.
        let mode = if dtype == Kind::Half && ws.size()[0] > 1 { ModConv::Unfused } else { mode };
        let layout = channels_last_for(ws.device(), dtype);
        let w = |i: i64| ws.select(1, i);
        let x = match (&self.constant, x) {
            (Some(c), _) => {
                let n = ws.size()[0];
                let c = with_layout(&c.to_kind(dtype).unsqueeze(0).repeat([n, 1, 1, 1]), layout);
                self.conv1.forward(&c, &w(0), noise[0], mode, 1.0)
            }
            (None, Some(x)) => {
                let x = with_layout(&x.to_kind(dtype), layout);
                let conv0 = self.conv0.as_ref().unwrap();
                if self.architecture == Architecture::Resnet {
                    let y = self.skip.as_ref().unwrap().forward(&x, std::f64::consts::FRAC_1_SQRT_2);
                    let x = conv0.forward(&x, &w(0), noise[0], mode, 1.0);
                    let x = self.conv1.forward(&x, &w(1), noise[1], mode, std::f64::consts::FRAC_1_SQRT_2);
                    y + x
                } else {
                    let x = conv0.forward(&x, &w(0), noise[0], mode, 1.0);
                    self.conv1.forward(&x, &w(1), noise[1], mode, 1.0)
                }
            }
            (None, None) => panic!("synthesis block above 4x4 needs an input"),
        };
        let img = img.map(|i| upsample2d(i, &self.resample_filter, 2));
        let img = match &self.torgb {
            Some(t) => {
                let y = t.forward(&x, &w(self.num_conv), mode).to_kind(Kind::Float);
                Some(match img {
                    Some(i) => i + y,
                    None => y,
                })
            }
            None => img,
        };
        (x, img)
    }
}

#[derive(Debug)]
pub struct SynthesisNetwork {
    pub blocks: Vec<SynthesisBlock>,
    pub num_ws: i64,
}

impl SynthesisNetwork {
    pub fn new(p: &Path, cfg: &ModelConfig) -> Self {
        let log2 = cfg.resolution_log2() as i64;
        let fp16_res = (1i64 << (log2 + 1 - cfg.num_fp16_res as i64)).max(8);
        let w_dim = cfg.w_dim as i64;
        let f = &cfg.resample_filter;
        let clamp = cfg.conv_clamp;
        let mut blocks = vec![];
        let mut num_ws = 0;
        for r_log2 in 2..=log2 {
            let res = 1i64 << r_log2;
            let in_ch = if res > 4 { cfg.channels_at(res as u32 / 2) } else { 0 };
            let out_ch = cfg.channels_at(res as u32);
            let is_last = res == cfg.resolution as i64;
            let bp = p / format!("b{res}");
            let constant =
                (in_ch == 0).then(|| bp.var("const", &[out_ch, res, res], Init::Randn { mean: 0.0, stdev: 1.0 }));
            let conv0 = (in_ch != 0).then(|| {
                SynthesisLayer::new(&(&bp / "conv0"), cfg, LayerShape { in_ch, out_ch, resolution: res, up: 2 })
            });
            let shape = LayerShape { in_ch: out_ch, out_ch, resolution: res, up: 1 };
            let conv1 = SynthesisLayer::new(&(&bp / "conv1"), cfg, shape);
            let torgb = (is_last || cfg.g_architecture == Architecture::Skip)
                .then(|| ToRgbLayer::new(&(&bp / "torgb"), out_ch, cfg.channels as i64, w_dim, clamp));
            let skip = (in_ch != 0 && cfg.g_architecture == Architecture::Resnet).then(|| {
                let spec = ConvSpec {
                    in_ch,
                    out_ch,
                    kernel: 1,
                    bias: false,
                    act: Act::Linear,
                    up: 2,
                    down: 1,
                    resample_filter: f,
                    conv_clamp: None,
                };
                Conv2dLayer::new(&(&bp / "skip"), spec)
            });
            let resample_filter = register_filter(&bp, f);
            let num_conv = if in_ch == 0 { 1 } else { 2 };
            let num_torgb = torgb.is_some() as i64;
            num_ws += num_conv + if is_last { num_torgb } else { 0 };
            blocks.push(SynthesisBlock {
                resolution: res,
                constant,
                conv0,
                conv1,
                torgb,
                skip,
                resample_filter,
                architecture: cfg.g_architecture,
                use_fp16: res >= fp16_res && cfg.num_fp16_res > 0,
                num_conv,
                num_torgb,
            });
        }
        SynthesisNetwork { blocks, num_ws }
    }

    /// Number of noise inputs (one per modulated 3x3 convolution), in the TF creation order.
    pub fn num_noise(&self) -> usize {
        self.blocks.iter().map(|b| b.num_conv as usize).sum()
    }

    /// Noise resolutions in that order.
    pub fn noise_resolutions(&self) -> Vec<i64> {
        self.blocks.iter().flat_map(|b| std::iter::repeat_n(b.resolution, b.num_conv as usize)).collect()
    }

    /// ws [N, num_ws, w_dim] -> images. `noise` holds one entry per conv (see `num_noise`) or one for all.
    /// `force_fp32` runs the fp16 layers in fp32 (the official `force_fp32`, which PPL uses).
    pub fn forward(&self, ws: &Tensor, noise: &[LayerNoise], mode: ModConv, force_fp32: bool) -> Tensor {
        let mut x: Option<Tensor> = None;
        let mut img: Option<Tensor> = None;
        let (mut w_idx, mut n_idx) = (0, 0);
        let pick = |i: usize| if noise.len() == 1 { &noise[0] } else { &noise[i] };
        for b in &self.blocks {
            let block_ws = ws.narrow(1, w_idx, b.num_conv + b.num_torgb);
            w_idx += b.num_conv;
            let nz = [pick(n_idx), pick(n_idx + b.num_conv as usize - 1)];
            n_idx += b.num_conv as usize;
            let (nx, nimg) = b.forward(x.as_ref(), img.as_ref(), &block_ws, nz, mode, force_fp32);
            x = Some(nx);
            img = nimg;
        }
        img.expect("synthesis produced no image")
    }
}

#[cfg(test)]
mod dtype_tests {
    use super::*;

    #[test]
    fn fp16_only_on_cuda_and_never_when_forced_to_fp32() {
        assert_eq!(block_dtype(true, true, false), Kind::Half);
        assert_eq!(block_dtype(true, true, true), Kind::Float);
        assert_eq!(block_dtype(true, false, false), Kind::Float);
        assert_eq!(block_dtype(false, true, false), Kind::Float);
    }
}
