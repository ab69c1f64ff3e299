//! The official custom ops as plain libtorch expressions: bias_act, upfirdn2d, conv2d_resample.
//!
//! These follow stylegan2-ada-pytorch's reference (non-CUDA-plugin) paths, which define the numbers.

use std::sync::atomic::{AtomicBool, Ordering};
use tch::{Kind, Tensor};

/// Activation of a layer; `def_gain` is the gain the official code applies by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Linear,
    Lrelu,
}

impl Act {
    pub fn def_gain(self) -> f64 {
        match self {
            Act::Linear => 1.0,
            Act::Lrelu => std::f64::consts::SQRT_2,
        }
    }
}

/// `bias_act`: add a per-channel bias (dim 1), apply the activation, scale by `gain`, clamp to +-`clamp`.
pub fn bias_act(x: &Tensor, b: Option<&Tensor>, act: Act, gain: f64, clamp: Option<f64>) -> Tensor {
    let mut x = match b {
        Some(b) => {
            let mut shape = vec![1i64; x.dim()];
            shape[1] = -1;
            x + b.reshape(&shape)
        }
        None => x.shallow_clone(),
    };
    if act == Act::Lrelu {
        // leaky_relu(0.2), then the gain, as the official reference path.
        x = crate::ffi::leaky_relu(&x, 0.2);
        if gain != 1.0 {
            x = x * gain;
        }
    } else if gain != 1.0 {
        x = x * gain;
    }
    match clamp {
        Some(c) => x.clamp(-c, c),
        None => x,
    }
}

/// The memory layout a block runs in: channels-last (NHWC strides behind the NCHW shape) on the CPU, where
/// oneDNN's convolutions then run without reorders and its depthwise FIR filters several times faster; on CUDA
/// only for fp16 blocks, as the official `fp16_channels_last`.
pub fn channels_last_for(device: tch::Device, kind: Kind) -> bool {
    device == tch::Device::Cpu || kind == Kind::Half
}

/// `x` in the given layout (no copy when it already is). The ops downstream keep the layout.
pub fn with_layout(x: &Tensor, channels_last: bool) -> Tensor {
    if x.dim() != 4 || is_channels_last(x) == channels_last {
        return x.shallow_clone();
    }
    if channels_last {
        x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
    } else {
        x.contiguous()
    }
}

/// True when `x` is 4-D and its memory is dense channels-last (NHWC).
pub fn is_channels_last(x: &Tensor) -> bool {
    let (s, st) = (x.size(), x.stride());
    x.dim() == 4 && st[1] == 1 && st[3] == s[1] && st[2] == s[1] * s[3] && st[0] == s[1] * s[2] * s[3]
}

/// What follows a layer's convolution: `bias_act`'s bias, activation, gain and clamp.
#[derive(Debug, Clone, Copy)]
pub struct BiasAct<'a> {
    pub bias: Option<&'a Tensor>,
    pub act: Act,
    pub gain: f64,
    pub clamp: Option<f64>,
}

impl BiasAct<'_> {
    /// Nothing: the convolution's output as it is.
    pub const NONE: BiasAct<'static> = BiasAct { bias: None, act: Act::Linear, gain: 1.0, clamp: None };
}

/// A layer's epilogue: `bias_act(x * scale + noise, ...)`, `scale` [N, C] (the demodulation coefficients) and
/// `noise` broadcasting to [N, 1, H, W]. On the CPU in fp32 it is one fused pass each way
/// (`ffi::fused`), elsewhere the official chain of element-wise ops; the forward values are the same.
pub fn epilogue(x: &Tensor, scale: Option<&Tensor>, noise: Option<&Tensor>, post: &BiasAct) -> Tensor {
    let lrelu = post.act == Act::Lrelu;
    if let Some(y) = crate::ffi::fused::bias_act(x, scale, noise, post.bias, lrelu, post.gain, post.clamp) {
        return y;
    }
    epilogue_chain(x, scale, noise, post)
}

/// `epilogue` as the official chain of element-wise ops.
fn epilogue_chain(x: &Tensor, scale: Option<&Tensor>, noise: Option<&Tensor>, post: &BiasAct) -> Tensor {
    let x = &widen(x.shallow_clone());
    let k = x.kind();
    let mut x = match scale {
        Some(d) => x * per_sample_channel(&d.to_kind(k), x.dim()),
        None => x.shallow_clone(),
    };
    if let Some(n) = noise {
        x = x + n.to_kind(k);
    }
    let b = post.bias.map(|b| b.to_kind(k));
    bias_act(&x, b.as_ref(), post.act, post.gain, post.clamp)
}

/// The official `setup_filter`: a 1-D filter becomes its normalized outer product (2-D, float32).
pub fn setup_filter(f: &[f64], device: tch::Device) -> Tensor {
    let n = f.len() as i64;
    let t = Tensor::from_slice(f).to_kind(Kind::Float);
    let f2 = t.unsqueeze(1).matmul(&t.unsqueeze(0));
    let f2 = &f2 / f2.sum(Kind::Float);
    f2.reshape([n, n]).to_device(device)
}

/// Padding as the official ops take it: (x0, x1, y0, y1).
pub type Pad4 = [i64; 4];

/// `upfirdn2d`: zero-insert upsampling by `up`, pad (negative values crop), FIR filter `f` (2-D), keep every
/// `down`-th pixel. `gain` scales the filter.
pub fn upfirdn2d(x: &Tensor, f: &Tensor, up: i64, down: i64, pad: Pad4, gain: f64) -> Tensor {
    let (n, c, h, w) = x.size4().expect("upfirdn2d wants NCHW");
    let [px0, px1, py0, py1] = pad;
    let mut x = if up > 1 {
        let z = x.reshape([n, c, h, 1, w, 1]).constant_pad_nd([0, up - 1, 0, 0, 0, up - 1]);
        with_layout(&z.reshape([n, c, h * up, w * up]), is_channels_last(x))
    } else {
        x.shallow_clone()
    };
    // Symmetric zero padding is the convolution's own (no padded copy).
    let conv_pad = if px0 == px1 && py0 == py1 && px0 >= 0 && py0 >= 0 { [py0, px0] } else { [0, 0] };
    if conv_pad == [0, 0] && (px0 > 0 || px1 > 0 || py0 > 0 || py1 > 0) {
        x = x.constant_pad_nd([px0.max(0), px1.max(0), py0.max(0), py1.max(0)]);
    }
    if px0 < 0 || px1 < 0 || py0 < 0 || py1 < 0 {
        let (hh, ww) = (x.size()[2], x.size()[3]);
        x = x.slice(2, (-py0).max(0), hh - (-py1).max(0), 1).slice(3, (-px0).max(0), ww - (-px1).max(0), 1);
    }
    // Convolution is correlation, so the official flips the filter first (a no-op for symmetric filters).
    let f = f.flip([0, 1]);
    let f = if gain != 1.0 { f * gain } else { f };
    let (fh, fw) = (f.size()[0], f.size()[1]);
    let weight = f.to_kind(x.kind()).reshape([1, 1, fh, fw]).expand([c, 1, fh, fw], false);
    // Keeping every `down`-th output is the strided convolution (which never computes the others).
    x.conv2d(&weight, None::<Tensor>, [down, down], conv_pad, [1, 1], c)
}

/// `n // 2` as Python floors it: the official padding arithmetic goes negative for filters shorter than the factor.
fn half(n: i64) -> i64 {
    n.div_euclid(2)
}

fn filter_size(f: &Tensor) -> (i64, i64) {
    let s = f.size();
    (s[1], s[0])
}

/// 2x (or `up`x) upsampling with the FIR filter, as `upfirdn2d.upsample2d`.
pub fn upsample2d(x: &Tensor, f: &Tensor, up: i64) -> Tensor {
    let (fw, fh) = filter_size(f);
    let pad = [half(fw + up - 1), half(fw - up), half(fh + up - 1), half(fh - up)];
    upfirdn2d(x, f, up, 1, pad, (up * up) as f64)
}

/// 2x (or `down`x) downsampling with the FIR filter, as `upfirdn2d.downsample2d`.
pub fn downsample2d(x: &Tensor, f: &Tensor, down: i64) -> Tensor {
    let (fw, fh) = filter_size(f);
    let pad = [half(fw - down + 1), half(fw - down), half(fh - down + 1), half(fh - down)];
    upfirdn2d(x, f, 1, down, pad, 1.0)
}

static CPU_BF16: AtomicBool = AtomicBool::new(false);
static CPU_WINOGRAD: AtomicBool = AtomicBool::new(false);

/// Runs `f` with `flag` at `on`, then restores the previous setting (also when `f` returns an error).
fn with_flag<T>(flag: &AtomicBool, on: bool, f: impl FnOnce() -> T) -> T {
    let before = flag.swap(on, Ordering::Relaxed);
    let out = f();
    flag.store(before, Ordering::Relaxed);
    out
}

/// Runs the CPU's fp32 weight convolutions in bfloat16 (inputs and weights rounded to bf16, fp32 accumulation,
/// outputs rounded to bf16: the layer's epilogue takes them as they are, the FIR filters widen them to fp32),
/// process-wide like CUDA's TF32 switch. Several times faster on CPUs with AMX or AVX512-BF16, and less exact: an
/// opt-in for training (`training.cpu_bf16`), never for metrics. The FIR filters, the affine layers and everything
/// element-wise stay fp32.
pub fn set_cpu_bf16(on: bool) {
    CPU_BF16.store(on, Ordering::Relaxed);
}

pub fn cpu_bf16() -> bool {
    CPU_BF16.load(Ordering::Relaxed)
}

/// Runs `f` with [`set_cpu_bf16`] at `on`, then restores the previous setting (also when `f` returns an error).
pub fn with_cpu_bf16<T>(on: bool, f: impl FnOnce() -> T) -> T {
    with_flag(&CPU_BF16, on, f)
}

/// Runs the CPU's fp32 3x3 convolutions of 8x8 pixels and more (stride 1, padding 1: every layer's main
/// convolution) by Winograd's F(4x4, 3x3) (`ffi::wino`), their gradients too (to second order); process-wide. Still
/// fp32, with a few 1e-6 of the output's scale more rounding than the direct convolution: training's default
/// (`training.cpu_winograd`), never used for generation or metrics, which repeat the official values.
pub fn set_cpu_winograd(on: bool) {
    CPU_WINOGRAD.store(on, Ordering::Relaxed);
}

pub fn cpu_winograd() -> bool {
    CPU_WINOGRAD.load(Ordering::Relaxed)
}

/// Runs `f` with [`set_cpu_winograd`] at `on`, then restores the previous setting.
pub fn with_cpu_winograd<T>(on: bool, f: impl FnOnce() -> T) -> T {
    with_flag(&CPU_WINOGRAD, on, f)
}

fn conv(x: &Tensor, w: &Tensor, stride: i64, padding: [i64; 2], groups: i64, transpose: bool, flip: bool) -> Tensor {
    let s = w.size();
    let w = if flip && (s[2] > 1 || s[3] > 1) { w.flip([2, 3]) } else { w.shallow_clone() };
    // A bf16 input comes from `modulate`, which rounds while it scales.
    let bf16 = x.kind() == Kind::BFloat16 || (x.kind() == Kind::Float && x.device() == tch::Device::Cpu && cpu_bf16());
    let (x, w) = if bf16 { (x.to_kind(Kind::BFloat16), w.to_kind(Kind::BFloat16)) } else { (x.shallow_clone(), w) };
    let winograd = !bf16 && !transpose && stride == 1 && groups == 1 && padding == [1, 1] && s[2] == 3 && s[3] == 3;
    if winograd && cpu_winograd() {
        if let Some(y) = crate::ffi::wino::conv3x3(&x, &w) {
            return y;
        }
    }
    if transpose {
        x.conv_transpose2d(&w, None::<Tensor>, [stride, stride], padding, [0, 0], groups, [1, 1])
    } else {
        x.conv2d(&w, None::<Tensor>, [stride, stride], padding, [1, 1], groups)
    }
}

/// A bf16 convolution output as fp32 (for the FIR filters, which stay fp32).
fn widen(x: Tensor) -> Tensor {
    if x.kind() == Kind::BFloat16 {
        x.to_kind(Kind::Float)
    } else {
        x
    }
}

/// `x * s[n, c]`, the unfused modulation; in bf16 mode the product comes rounded to bf16 for the convolution.
fn modulate(x: &Tensor, s: &Tensor) -> Tensor {
    let bf16 = x.device() == tch::Device::Cpu && cpu_bf16();
    if let Some(y) = crate::ffi::fused::modulate(x, s, bf16) {
        return y;
    }
    x * per_sample_channel(&s.to_kind(x.kind()), x.dim())
}

/// s [N, C] shaped to broadcast over an [N, C, ...] tensor of `dim` dimensions.
fn per_sample_channel(s: &Tensor, dim: usize) -> Tensor {
    let mut shape = vec![1i64; dim];
    shape[0] = s.size()[0];
    shape[1] = -1;
    s.reshape(&shape)
}

/// The official `conv2d_resample` keywords.
#[derive(Debug, Clone, Copy)]
pub struct Conv2dResampleSpec<'a> {
    /// The FIR filter (`setup_filter`); needed when `up` or `down` > 1.
    pub filter: Option<&'a Tensor>,
    pub up: i64,
    pub down: i64,
    pub padding: i64,
    pub groups: i64,
    /// As the official flag: true runs a plain correlation.
    pub flip_weight: bool,
}

/// `conv2d_resample`: a convolution with optional FIR up/downsampling, taking the same fast paths as the official
/// op (transposed convolution for up, strided for down), which fixes the exact sampling grid. With `cpu_bf16` the
/// result may be bfloat16 (`epilogue` takes it as it is).
pub fn conv2d_resample(x: &Tensor, w: &Tensor, spec: &Conv2dResampleSpec) -> Tensor {
    let Conv2dResampleSpec { filter: f, up, down, padding, groups, flip_weight } = *spec;
    let ws = w.size();
    let (out_ch, in_per_group, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let (fw, fh) = f.map(filter_size).unwrap_or((1, 1));
    let (mut px0, mut px1, mut py0, mut py1) = (padding, padding, padding, padding);
    if up > 1 {
        px0 += half(fw + up - 1);
        px1 += half(fw - up);
        py0 += half(fh + up - 1);
        py1 += half(fh - up);
    }
    if down > 1 {
        px0 += half(fw - down + 1);
        px1 += half(fw - down);
        py0 += half(fh - down + 1);
        py1 += half(fh - down);
    }
    // flip_weight = true means "no flip" (plain correlation) in the official wrapper.
    let no_flip = !flip_weight;
    if kw == 1 && kh == 1 && down > 1 && up == 1 {
        let x = upfirdn2d(x, f.unwrap(), 1, down, [px0, px1, py0, py1], 1.0);
        return conv(&x, w, 1, [0, 0], groups, false, no_flip);
    }
    if kw == 1 && kh == 1 && up > 1 && down == 1 {
        let x = widen(conv(x, w, 1, [0, 0], groups, false, no_flip));
        return upfirdn2d(&x, f.unwrap(), up, 1, [px0, px1, py0, py1], (up * up) as f64);
    }
    if down > 1 && up == 1 {
        let x = upfirdn2d(&widen(x.shallow_clone()), f.unwrap(), 1, 1, [px0, px1, py0, py1], 1.0);
        return conv(&x, w, down, [0, 0], groups, false, no_flip);
    }
    if up > 1 {
        let w = if groups == 1 {
            w.transpose(0, 1)
        } else {
            w.reshape([groups, out_ch / groups, in_per_group, kh, kw]).transpose(1, 2).reshape([
                groups * in_per_group,
                out_ch / groups,
                kh,
                kw,
            ])
        };
        px0 -= kw - 1;
        px1 -= kw - up;
        py0 -= kh - 1;
        py1 -= kh - up;
        let pxt = (-px0).min(-px1).max(0);
        let pyt = (-py0).min(-py1).max(0);
        let x = widen(conv(x, &w, up, [pyt, pxt], groups, true, !no_flip));
        let x = upfirdn2d(&x, f.unwrap(), 1, 1, [px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt], (up * up) as f64);
        return if down > 1 { upfirdn2d(&x, f.unwrap(), 1, down, [0, 0, 0, 0], 1.0) } else { x };
    }
    if px0 == px1 && py0 == py1 && px0 >= 0 && py0 >= 0 {
        return conv(x, w, 1, [py0, px0], groups, false, no_flip);
    }
    // General case (not reached by StyleGAN2's layers).
    let x = widen(x.shallow_clone());
    let x = upfirdn2d(&x, f.expect("resampling needs a filter"), up, 1, [px0, px1, py0, py1], (up * up) as f64);
    let x = widen(conv(&x, w, 1, [0, 0], groups, false, no_flip));
    if down > 1 {
        upfirdn2d(&x, f.unwrap(), 1, down, [0, 0, 0, 0], 1.0)
    } else {
        x
    }
}

/// How the modulated convolution is executed: one grouped convolution per batch (`Fused`) or the activations
/// scaled before and after a shared-weight convolution (`Unfused`). Both give the official values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModConv {
    Fused,
    Unfused,
}

impl ModConv {
    /// The faster form for inference (generate, metrics) on `device`: grouped on CUDA, as the official runs
    /// inference; unfused on the CPU, where oneDNN's grouped convolution measured 1.2x (256x256, one image) to
    /// 2.4x (32x32, batch 32) slower than the shared-weight one (BENCHMARKS.md).
    pub fn inference_default(device: tch::Device) -> ModConv {
        if device.is_cuda() {
            ModConv::Fused
        } else {
            ModConv::Unfused
        }
    }
}

/// The official `modulated_conv2d` keywords, and the form that runs it.
#[derive(Debug, Clone, Copy)]
pub struct ModConvSpec<'a> {
    pub up: i64,
    pub padding: i64,
    /// The FIR filter (`setup_filter`); needed when `up` > 1.
    pub resample_filter: Option<&'a Tensor>,
    pub demodulate: bool,
    /// As the official flag: true runs a plain correlation.
    pub flip_weight: bool,
    pub mode: ModConv,
}

/// `modulated_conv2d`: weight modulated by per-sample styles, optionally demodulated, plus noise, then the layer's
/// `post` (its bias_act), all applied by `epilogue`.
pub fn modulated_conv2d(
    x: &Tensor,
    weight: &Tensor,
    styles: &Tensor,
    noise: Option<&Tensor>,
    spec: &ModConvSpec,
    post: &BiasAct,
) -> Tensor {
    let ModConvSpec { up, padding, resample_filter: f, demodulate, flip_weight, mode } = *spec;
    let batch = x.size()[0];
    let ws = weight.size();
    let (out_ch, in_ch, kh, kw) = (ws[0], ws[1], ws[2], ws[3]);
    let (mut weight, mut styles) = (weight.shallow_clone(), styles.shallow_clone());
    if x.kind() == Kind::Half && demodulate {
        // Pre-normalize to avoid fp16 overflow, as the official does.
        let wn = weight.abs().amax(&[1i64, 2, 3][..], true);
        weight = &weight * (1.0 / ((in_ch * kh * kw) as f64).sqrt()) / wn;
        styles = &styles / styles.abs().amax(&[1i64][..], true);
    }
    let mut w = (mode == ModConv::Fused).then(|| weight.unsqueeze(0) * styles.reshape([batch, 1, -1, 1, 1]));
    let dcoefs = demodulate.then(|| {
        // The official sums the squares of the [N, out, in, k, k] modulated weight. The same sum factors as
        // styles^2 [N, in] @ (sum over k of weight^2) [in, out]: a small matmul instead of materialising (and
        // differentiating) a weight per sample, equal up to float summation order.
        let w2 = weight.to_kind(Kind::Float).square().sum_dim_intlist(&[2i64, 3][..], false, Kind::Float);
        let s2 = styles.to_kind(Kind::Float).square();
        (s2.matmul(&w2.tr()) + 1e-8).rsqrt()
    });
    if mode == ModConv::Unfused {
        let x = modulate(x, &styles);
        let spec = Conv2dResampleSpec { filter: f, up, down: 1, padding, groups: 1, flip_weight };
        let x = conv2d_resample(&x, &weight.to_kind(x.kind()), &spec);
        return epilogue(&x, dcoefs.as_ref(), noise, post);
    }
    if let (Some(d), Some(wm)) = (&dcoefs, &w) {
        w = Some(wm * d.reshape([batch, -1, 1, 1, 1]));
    }
    let w = w.unwrap().reshape([-1, in_ch, kh, kw]).to_kind(x.kind());
    let sz = x.size();
    let x = x.reshape([1, -1, sz[2], sz[3]]);
    let spec = Conv2dResampleSpec { filter: f, up, down: 1, padding, groups: batch, flip_weight };
    let x = conv2d_resample(&x, &w, &spec);
    let sz = x.size();
    let x = x.reshape([batch, out_ch, sz[2], sz[3]]);
    epilogue(&x, None, noise, post)
}

#[cfg(test)]
mod tests;
