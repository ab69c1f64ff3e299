//! The official `Discriminator`: fromRGB, residual downsampling blocks, minibatch stddev and the 4x4 epilogue.

use super::mapping::{MappingNetwork, MappingSpec};
use crate::config::{Architecture, ModelConfig};
use crate::nn::layers::{register_filter, ConvSpec};
use crate::nn::ops::{channels_last_for, downsample2d, with_layout};
use crate::nn::{Act, Conv2dLayer, FullyConnected};
use std::f64::consts::FRAC_1_SQRT_2;
use tch::nn::Path;
use tch::{Kind, Tensor};

/// The usual D convolution: lrelu with bias, no resampling, the model's filter and `conv_clamp`. Layers that differ
/// (downsampling, the linear skips, the 4x4 fromRGB that the official leaves unclamped) override fields.
fn conv(cfg: &ModelConfig, in_ch: i64, out_ch: i64, kernel: i64) -> ConvSpec<'_> {
    ConvSpec {
        in_ch,
        out_ch,
        kernel,
        bias: true,
        act: Act::Lrelu,
        up: 1,
        down: 1,
        resample_filter: &cfg.resample_filter,
        conv_clamp: cfg.conv_clamp,
    }
}

#[derive(Debug)]
struct DiscriminatorBlock {
    fromrgb: Option<Conv2dLayer>,
    conv0: Conv2dLayer,
    conv1: Conv2dLayer,
    skip: Option<Conv2dLayer>,
    resample_filter: Tensor,
    architecture: Architecture,
    use_fp16: bool,
}

impl DiscriminatorBlock {
    fn forward(&self, x: Option<&Tensor>, img: &Tensor) -> (Tensor, Option<Tensor>) {
        let dtype = if self.use_fp16 && img.device().is_cuda() { Kind::Half } else { Kind::Float };
        let layout = channels_last_for(img.device(), dtype);
        let mut x = x.map(|x| with_layout(&x.to_kind(dtype), layout));
        let mut img_out = None;
        if let Some(fromrgb) = &self.fromrgb {
            let y = fromrgb.forward(&with_layout(&img.to_kind(dtype), layout), 1.0);
            x = Some(match x {
                Some(x) => x + y,
                None => y,
            });
            if self.architecture == Architecture::Skip {
                img_out = Some(downsample2d(img, &self.resample_filter, 2));
            }
        }
        let x = x.expect("discriminator block without input");
        let x = if let Some(skip) = &self.skip {
            let y = skip.forward(&x, FRAC_1_SQRT_2);
            let x = self.conv0.forward(&x, 1.0);
            y + self.conv1.forward(&x, FRAC_1_SQRT_2)
        } else {
            self.conv1.forward(&self.conv0.forward(&x, 1.0), 1.0)
        };
        (x, img_out)
    }
}

/// Minibatch standard deviation over groups of `group` samples, appended as `features` channels.
pub fn minibatch_std(x: &Tensor, group: i64, features: i64) -> Tensor {
    let (n, c, h, w) = x.size4().unwrap();
    let g = group.min(n);
    let f = features;
    let y = x.reshape([g, -1, f, c / f, h, w]);
    let y = &y - y.mean_dim(&[0i64][..], false, Kind::Float);
    let y = y.square().mean_dim(&[0i64][..], false, Kind::Float);
    let y = (y + 1e-8).sqrt();
    let y = y.mean_dim(&[2i64, 3, 4][..], false, Kind::Float);
    let y = y.reshape([-1, f, 1, 1]).repeat([g, 1, h, w]);
    Tensor::cat(&[x.shallow_clone(), y.to_kind(x.kind())], 1)
}

#[derive(Debug)]
struct Epilogue {
    fromrgb: Option<Conv2dLayer>,
    mbstd_group: i64,
    mbstd_features: i64,
    conv: Conv2dLayer,
    fc: FullyConnected,
    out: FullyConnected,
    cmap_dim: i64,
}

impl Epilogue {
    fn forward(&self, x: &Tensor, img: Option<&Tensor>, cmap: Option<&Tensor>) -> Tensor {
        let mut x = x.to_kind(Kind::Float);
        if let (Some(fromrgb), Some(img)) = (&self.fromrgb, img) {
            x = x + fromrgb.forward(img, 1.0);
        }
        if self.mbstd_features > 0 {
            x = minibatch_std(&x, self.mbstd_group, self.mbstd_features);
            x = with_layout(&x, channels_last_for(x.device(), x.kind()));
        }
        let x = self.conv.forward(&x, 1.0);
        let x = self.fc.forward(&x.flatten(1, -1));
        let x = self.out.forward(&x);
        match cmap {
            Some(c) => (x * c).sum_dim_intlist(&[1i64][..], true, Kind::Float) * (1.0 / (self.cmap_dim as f64).sqrt()),
            None => x,
        }
    }
}

#[derive(Debug)]
pub struct Discriminator {
    blocks: Vec<DiscriminatorBlock>,
    mapping: Option<MappingNetwork>,
    b4: Epilogue,
}

impl Discriminator {
    pub fn new(p: &Path, cfg: &ModelConfig) -> Self {
        let log2 = cfg.resolution_log2() as i64;
        let fp16_res = (1i64 << (log2 + 1 - cfg.num_fp16_res as i64)).max(8);
        let arch = cfg.d_architecture;
        let ch = |r: i64| cfg.channels_at(r as u32);
        let img_ch = cfg.channels as i64;
        let mut blocks = vec![];
        for r_log2 in (3..=log2).rev() {
            let res = 1i64 << r_log2;
            let in_ch = if res < cfg.resolution as i64 { ch(res) } else { 0 };
            let (tmp, out) = (ch(res), ch(res / 2));
            let bp = p / format!("b{res}");
            let fromrgb = (in_ch == 0 || arch == Architecture::Skip)
                .then(|| Conv2dLayer::new(&(&bp / "fromrgb"), conv(cfg, img_ch, tmp, 1)));
            let conv0 = Conv2dLayer::new(&(&bp / "conv0"), conv(cfg, tmp, tmp, 3));
            let conv1 = Conv2dLayer::new(&(&bp / "conv1"), ConvSpec { down: 2, ..conv(cfg, tmp, out, 3) });
            let skip = (arch == Architecture::Resnet).then(|| {
                let spec =
                    ConvSpec { act: Act::Linear, down: 2, bias: false, conv_clamp: None, ..conv(cfg, tmp, out, 1) };
                Conv2dLayer::new(&(&bp / "skip"), spec)
            });
            let resample_filter = register_filter(&bp, &cfg.resample_filter);
            blocks.push(DiscriminatorBlock {
                fromrgb,
                conv0,
                conv1,
                skip,
                resample_filter,
                architecture: arch,
                use_fp16: res >= fp16_res && cfg.num_fp16_res > 0,
            });
        }
        let c_dim = cfg.c_dim as i64;
        let cmap_dim = if c_dim > 0 { ch(4) } else { 0 };
        // The official D label mapping keeps MappingNetwork's defaults (8 layers, lr_multiplier 0.01), whatever G's
        // mapping uses.
        let mapping = (c_dim > 0).then(|| {
            let spec = MappingSpec {
                z_dim: 0,
                c_dim,
                w_dim: cmap_dim,
                num_ws: None,
                num_layers: 8,
                lr_mul: super::mapping::DEFAULT_LR_MUL,
            };
            MappingNetwork::new(&(p / "mapping"), spec)
        });
        let ep = p / "b4";
        let c4 = ch(4);
        let mbf = cfg.mbstd_features as i64;
        let b4 = Epilogue {
            fromrgb: (arch == Architecture::Skip).then(|| {
                Conv2dLayer::new(&(&ep / "fromrgb"), ConvSpec { conv_clamp: None, ..conv(cfg, img_ch, c4, 1) })
            }),
            mbstd_group: cfg.mbstd_group as i64,
            mbstd_features: mbf,
            conv: Conv2dLayer::new(&(&ep / "conv"), conv(cfg, c4 + mbf, c4, 3)),
            fc: FullyConnected::new(&(&ep / "fc"), c4 * 16, c4, true, Act::Lrelu, 1.0, 0.0),
            out: FullyConnected::new(
                &(&ep / "out"),
                c4,
                if cmap_dim == 0 { 1 } else { cmap_dim },
                true,
                Act::Linear,
                1.0,
                0.0,
            ),
            cmap_dim,
        };
        Discriminator { blocks, mapping, b4 }
    }

    /// img [N, C, H, W] in [-1, 1], c one-hot [N, c_dim] for conditional networks -> logits [N, 1].
    pub fn forward(&self, img: &Tensor, c: Option<&Tensor>) -> Tensor {
        let mut x: Option<Tensor> = None;
        let mut img = img.shallow_clone();
        for b in &self.blocks {
            let (nx, nimg) = b.forward(x.as_ref(), &img);
            x = Some(nx);
            if let Some(i) = nimg {
                img = i;
            }
        }
        let cmap = self.mapping.as_ref().map(|m| m.forward_w(None, c));
        self.b4.forward(&x.expect("resolution >= 8"), Some(&img), cmap.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_mapping_uses_the_official_lr_multiplier_whatever_g_uses() {
        // Weights are stored scaled by 1 / lr_mul (randn / 0.01: std 100), so their spread shows the multiplier.
        for g_lr_mul in [1.0, 0.01] {
            let cfg = crate::config::ModelConfig {
                resolution: 8,
                c_dim: 3,
                fmap_base: 64,
                fmap_max: 16,
                mapping_lr_mul: g_lr_mul,
                ..Default::default()
            };
            let vs = tch::nn::VarStore::new(tch::Device::Cpu);
            let _d = Discriminator::new(&vs.root(), &cfg);
            let w = &vs.variables()["mapping.fc1.weight"];
            let std = w.std(true).double_value(&[]);
            assert!((70.0..130.0).contains(&std), "std {std} with G lr_mul {g_lr_mul}");
        }
    }

    #[test]
    fn layer_order_names_every_block_layer_from_the_input() {
        let cfg = crate::config::ModelConfig { resolution: 16, fmap_base: 64, fmap_max: 16, ..Default::default() };
        let order = cfg.d_layer_order();
        assert_eq!(order[..5], ["b16.fromrgb", "b16.conv0", "b16.conv1", "b16.skip", "b8.conv0"]);
        // Each named layer exists in the network (weights), and every block weight is named.
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _d = Discriminator::new(&vs.root(), &cfg);
        let vars = vs.variables();
        for l in &order {
            assert!(vars.contains_key(&format!("{l}.weight")), "{l}");
        }
        let block_weights = vars.keys().filter(|k| k.ends_with(".weight") && !k.starts_with("b4.")).count();
        assert_eq!(block_weights, order.len());
    }
}
