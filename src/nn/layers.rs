//! Equalized-learning-rate layers: weights are stored unscaled and multiplied by 1/sqrt(fan_in) at run time.

use super::ops::{conv2d_resample, epilogue, setup_filter, Act, BiasAct, Conv2dResampleSpec};
use tch::nn::{Init, Path};
use tch::Tensor;

/// The official `FullyConnectedLayer`.
#[derive(Debug)]
pub struct FullyConnected {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    act: Act,
    weight_gain: f64,
    bias_gain: f64,
}

impl FullyConnected {
    /// `lr_mul` scales the effective learning rate (the weights are initialised as randn / lr_mul).
    pub fn new(p: &Path, in_f: i64, out_f: i64, bias: bool, act: Act, lr_mul: f64, bias_init: f64) -> Self {
        let weight = p.var("weight", &[out_f, in_f], Init::Randn { mean: 0.0, stdev: 1.0 / lr_mul });
        let bias = bias.then(|| p.var("bias", &[out_f], Init::Const(bias_init)));
        FullyConnected { weight, bias, act, weight_gain: lr_mul / (in_f as f64).sqrt(), bias_gain: lr_mul }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let w = (&self.weight * self.weight_gain).to_kind(x.kind());
        let b = self.bias.as_ref().map(|b| {
            let b = if self.bias_gain != 1.0 { b * self.bias_gain } else { b.shallow_clone() };
            b.to_kind(x.kind())
        });
        match (&b, self.act) {
            (Some(b), Act::Linear) => b.unsqueeze(0).addmm(x, &w.tr()),
            _ => {
                let post = BiasAct { bias: b.as_ref(), act: self.act, gain: self.act.def_gain(), clamp: None };
                epilogue(&x.matmul(&w.tr()), None, None, &post)
            }
        }
    }
}

/// The official `Conv2dLayer` (used by the discriminator and the resnet skips).
#[derive(Debug)]
pub struct Conv2dLayer {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
    resample_filter: Tensor,
    act: Act,
    up: i64,
    down: i64,
    padding: i64,
    weight_gain: f64,
    conv_clamp: Option<f64>,
}

/// The official `Conv2dLayer` arguments.
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec<'a> {
    pub in_ch: i64,
    pub out_ch: i64,
    pub kernel: i64,
    pub bias: bool,
    pub act: Act,
    pub up: i64,
    pub down: i64,
    pub resample_filter: &'a [f64],
    pub conv_clamp: Option<f64>,
}

impl Conv2dLayer {
    pub fn new(p: &Path, s: ConvSpec) -> Self {
        let weight = p.var("weight", &[s.out_ch, s.in_ch, s.kernel, s.kernel], Init::Randn { mean: 0.0, stdev: 1.0 });
        let bias = s.bias.then(|| p.var("bias", &[s.out_ch], Init::Const(0.0)));
        let resample_filter = register_filter(p, s.resample_filter);
        Conv2dLayer {
            weight,
            bias,
            resample_filter,
            act: s.act,
            up: s.up,
            down: s.down,
            padding: s.kernel / 2,
            weight_gain: 1.0 / ((s.in_ch * s.kernel * s.kernel) as f64).sqrt(),
            conv_clamp: s.conv_clamp,
        }
    }

    pub fn forward(&self, x: &Tensor, gain: f64) -> Tensor {
        let w = (&self.weight * self.weight_gain).to_kind(x.kind());
        let spec = Conv2dResampleSpec {
            filter: Some(&self.resample_filter),
            up: self.up,
            down: self.down,
            padding: self.padding,
            groups: 1,
            flip_weight: self.up == 1,
        };
        let x = conv2d_resample(x, &w, &spec);
        let post = BiasAct {
            bias: self.bias.as_ref(),
            act: self.act,
            gain: self.act.def_gain() * gain,
            clamp: self.conv_clamp.map(|c| c * gain),
        };
        epilogue(&x, None, None, &post)
    }
}

/// The `resample_filter` buffer every resampling-capable official layer registers (non-trainable).
pub fn register_filter(p: &Path, f: &[f64]) -> Tensor {
    let n = f.len() as i64;
    let mut buf = p.zeros_no_train("resample_filter", &[n, n]);
    tch::no_grad(|| buf.copy_(&setup_filter(f, buf.device())));
    buf
}
