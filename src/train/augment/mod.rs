//! The ADA augmentation pipeline of "Training Generative Adversarial Networks with Limited Data", with the
//! numbers of stylegan2-ada-pytorch's `AugmentPipe`: the same fifteen kinds, strengths, presets and order of random
//! draws, so that a seeded libtorch CPU generator gives the official outputs (tests/golden/augment-*).
//!
//! Every augmentation is linear in the image once its random parameters are drawn, and every operation that
//! touches the image (padding, FIR filters, bilinear resampling, colour matrices, masks) is built from ops whose
//! second derivative libtorch provides, so R1 can take a double backward through the pipe.

mod color;
mod corrupt;
mod filter;
mod geom;
pub mod preview;
mod sampling;

use anyhow::{bail, ensure, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// The augmentation kinds in the order the pipe applies them, and the official presets (`augpipe_specs` of
/// stylegan2-ada-pytorch's train.py; `bgc` is the official default). The config validates against the same lists.
pub use crate::config::{AUGMENT_KINDS as KINDS, AUGMENT_PIPES as PRESETS};

/// Which augmentations run and how strong they are. Field names are the official constructor kwargs.
///
/// Each multiplier scales the overall probability `p`: a kind with multiplier 1 is applied to each image with
/// probability `p` (rotation: pre- or post-rotation with combined probability `p`). 0 disables the kind, and a
/// disabled kind draws no random numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentSpec {
    /// x-flip.
    pub xflip: f64,
    /// Rotation by a multiple of 90 degrees.
    pub rotate90: f64,
    /// Integer translation.
    pub xint: f64,
    /// Range of integer translation, relative to the image size.
    pub xint_max: f64,
    /// Isotropic scaling.
    pub scale: f64,
    /// Arbitrary rotation.
    pub rotate: f64,
    /// Anisotropic scaling.
    pub aniso: f64,
    /// Fractional translation.
    pub xfrac: f64,
    /// log2 standard deviation of isotropic scaling.
    pub scale_std: f64,
    /// Range of arbitrary rotation, 1 = full circle.
    pub rotate_max: f64,
    /// log2 standard deviation of anisotropic scaling.
    pub aniso_std: f64,
    /// Standard deviation of fractional translation, relative to the image size.
    pub xfrac_std: f64,
    /// Brightness.
    pub brightness: f64,
    /// Contrast.
    pub contrast: f64,
    /// Luma flip.
    pub lumaflip: f64,
    /// Hue rotation (3-channel images only).
    pub hue: f64,
    /// Saturation (3-channel images only).
    pub saturation: f64,
    /// Standard deviation of brightness.
    pub brightness_std: f64,
    /// log2 standard deviation of contrast.
    pub contrast_std: f64,
    /// Range of hue rotation, 1 = full circle.
    pub hue_max: f64,
    /// log2 standard deviation of saturation.
    pub saturation_std: f64,
    /// Image-space filtering.
    pub imgfilter: f64,
    /// Multipliers of the four frequency bands (low to high).
    pub imgfilter_bands: [f64; 4],
    /// log2 standard deviation of a band's amplification.
    pub imgfilter_std: f64,
    /// Additive Gaussian noise.
    pub noise: f64,
    /// Cutout.
    pub cutout: f64,
    /// Standard deviation of the noise.
    pub noise_std: f64,
    /// Side of the cutout square, relative to the image size.
    pub cutout_size: f64,
}

impl Default for AugmentSpec {
    /// Every kind off, official strengths.
    fn default() -> Self {
        AugmentSpec {
            xflip: 0.0,
            rotate90: 0.0,
            xint: 0.0,
            xint_max: 0.125,
            scale: 0.0,
            rotate: 0.0,
            aniso: 0.0,
            xfrac: 0.0,
            scale_std: 0.2,
            rotate_max: 1.0,
            aniso_std: 0.2,
            xfrac_std: 0.125,
            brightness: 0.0,
            contrast: 0.0,
            lumaflip: 0.0,
            hue: 0.0,
            saturation: 0.0,
            brightness_std: 0.2,
            contrast_std: 0.5,
            hue_max: 1.0,
            saturation_std: 1.0,
            imgfilter: 0.0,
            imgfilter_bands: [1.0; 4],
            imgfilter_std: 1.0,
            noise: 0.0,
            cutout: 0.0,
            noise_std: 0.1,
            cutout_size: 0.5,
        }
    }
}

impl AugmentSpec {
    fn multiplier_mut(&mut self, kind: &str) -> Option<&mut f64> {
        Some(match kind {
            "xflip" => &mut self.xflip,
            "rotate90" => &mut self.rotate90,
            "xint" => &mut self.xint,
            "scale" => &mut self.scale,
            "rotate" => &mut self.rotate,
            "aniso" => &mut self.aniso,
            "xfrac" => &mut self.xfrac,
            "brightness" => &mut self.brightness,
            "contrast" => &mut self.contrast,
            "lumaflip" => &mut self.lumaflip,
            "hue" => &mut self.hue,
            "saturation" => &mut self.saturation,
            "imgfilter" => &mut self.imgfilter,
            "noise" => &mut self.noise,
            "cutout" => &mut self.cutout,
            _ => return None,
        })
    }

    /// The multipliers in the order of [`KINDS`].
    pub fn multipliers(&self) -> [f64; 15] {
        [
            self.xflip,
            self.rotate90,
            self.xint,
            self.scale,
            self.rotate,
            self.aniso,
            self.xfrac,
            self.brightness,
            self.contrast,
            self.lumaflip,
            self.hue,
            self.saturation,
            self.imgfilter,
            self.noise,
            self.cutout,
        ]
    }

    /// The multiplier of a kind by its name (one of [`KINDS`]).
    pub fn multiplier(&self, kind: &str) -> Option<f64> {
        KINDS.iter().position(|k| *k == kind).map(|i| self.multipliers()[i])
    }

    /// Official strengths with the given kinds at multiplier 1.
    pub fn with_kinds(kinds: &[&str]) -> Result<AugmentSpec> {
        let mut spec = AugmentSpec::default();
        for k in kinds {
            match spec.multiplier_mut(k) {
                Some(m) => *m = 1.0,
                None => bail!("unknown augmentation kind {k:?} (known: {})", KINDS.join(", ")),
            }
        }
        Ok(spec)
    }

    /// Checks that every value is finite and non-negative.
    pub fn validate(&self) -> Result<()> {
        let value = serde_json::to_value(self)?;
        for (name, v) in value.as_object().expect("a struct serializes to an object") {
            let nums: Vec<f64> = match v {
                serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_f64()).collect(),
                other => other.as_f64().into_iter().collect(),
            };
            for x in nums {
                ensure!(x.is_finite() && x >= 0.0, "augment: {name} = {x} (must be finite and >= 0)");
            }
        }
        Ok(())
    }

    /// Whether any kind is on (a pipe with none returns its input untouched).
    pub fn any(&self) -> bool {
        self.multipliers().iter().any(|&m| m > 0.0)
    }
}

/// An official preset by name (`blit geom color filter noise cutout bg bgc bgcf bgcfn bgcfnc`).
pub fn preset(name: &str) -> Result<AugmentSpec> {
    let kinds: &[&str] = match name {
        "blit" => &KINDS[0..3],
        "geom" => &KINDS[3..7],
        "color" => &KINDS[7..12],
        "filter" => &KINDS[12..13],
        "noise" => &KINDS[13..14],
        "cutout" => &KINDS[14..15],
        "bg" => &KINDS[0..7],
        "bgc" => &KINDS[0..12],
        "bgcf" => &KINDS[0..13],
        "bgcfn" => &KINDS[0..14],
        "bgcfnc" => &KINDS[0..15],
        _ => bail!("unknown augmentation preset {name:?} (known: {})", PRESETS.join(", ")),
    };
    AugmentSpec::with_kinds(kinds)
}

/// The pipe: a spec and the overall augmentation probability `p` (which ADA adjusts during training).
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentPipe {
    pub spec: AugmentSpec,
    pub p: f64,
}

/// Draws from libtorch's default generator of one device, always float32 as the official pipe (whatever the
/// image dtype), so that the same seed gives the same parameters.
struct Draw {
    device: Device,
    /// The official `p` is a float32 buffer; probabilities are formed and compared in float32.
    p: f32,
}

impl Draw {
    fn rand(&self, shape: &[i64]) -> Tensor {
        Tensor::rand(shape, (Kind::Float, self.device))
    }
    fn randn(&self, shape: &[i64]) -> Tensor {
        Tensor::randn(shape, (Kind::Float, self.device))
    }
    /// `multiplier * p` as the float32 tensor arithmetic of the official code forms it.
    fn prob(&self, multiplier: f64) -> f32 {
        multiplier as f32 * self.p
    }
    /// `torch.rand(shape) < prob`: which samples get the augmentation.
    fn coin(&self, shape: &[i64], prob: f32) -> Tensor {
        self.rand(shape).lt(prob as f64)
    }
}

impl AugmentPipe {
    pub fn new(spec: AugmentSpec, p: f64) -> AugmentPipe {
        AugmentPipe { spec, p }
    }

    /// Augments a batch of NCHW float images in [-1, 1] (1 or 3 channels, any size) on their own device; returns
    /// the same shape. Random numbers come from libtorch's default generator of that device, drawn in the
    /// official order (also those of samples the augmentation then skips), so `tch::manual_seed(s)` right before
    /// the call reproduces the official pipe after `torch.manual_seed(s)` on the CPU.
    pub fn forward(&self, images: &Tensor) -> Tensor {
        let size = images.size();
        assert!(size.len() == 4, "AugmentPipe: expected NCHW images, got shape {size:?}");
        assert!(
            matches!(images.kind(), Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16),
            "AugmentPipe: expected float images, got {:?}",
            images.kind()
        );
        let s = &self.spec;
        let draw = Draw { device: images.device(), p: self.p as f32 };
        let mut x = images.shallow_clone();
        if let Some(g_inv) = geom::draw_transform(s, &draw, &size) {
            x = geom::apply(&x, &g_inv);
        }
        if let Some(c) = color::draw_transform(s, &draw, size[0], size[1]) {
            x = color::apply(&x, &c);
        }
        if s.imgfilter > 0.0 {
            x = filter::imgfilter(&x, s, &draw);
        }
        if s.noise > 0.0 {
            x = corrupt::noise(&x, s, &draw);
        }
        if s.cutout > 0.0 {
            x = corrupt::cutout(&x, s, &draw);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_match_the_official_specs() {
        let on = |name: &str| -> Vec<&str> {
            let s = preset(name).unwrap();
            KINDS.iter().copied().filter(|k| s.multiplier(k) == Some(1.0)).collect()
        };
        assert_eq!(on("blit"), ["xflip", "rotate90", "xint"]);
        assert_eq!(on("geom"), ["scale", "rotate", "aniso", "xfrac"]);
        assert_eq!(on("color"), ["brightness", "contrast", "lumaflip", "hue", "saturation"]);
        assert_eq!(on("bgc").len(), 12);
        assert_eq!(on("bgcfnc"), KINDS);
        let err = preset("bgcx").unwrap_err().to_string();
        assert!(err.contains("bgcfnc") && err.contains("blit"), "{err}");
    }

    #[test]
    fn spec_serde_uses_the_official_names_and_defaults() {
        let s: AugmentSpec = toml::from_str("xflip = 1\nscale_std = 0.3\nimgfilter_bands = [1, 0, 0, 1]").unwrap();
        assert_eq!(s.xflip, 1.0);
        assert_eq!(s.scale_std, 0.3);
        assert_eq!(s.imgfilter_bands, [1.0, 0.0, 0.0, 1.0]);
        assert_eq!(s.cutout_size, 0.5);
        assert!(toml::from_str::<AugmentSpec>("xflipp = 1").is_err());
        let back: AugmentSpec = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        assert!(!AugmentSpec::default().any());
        let mut bad = preset("bgc").unwrap();
        bad.imgfilter_bands[2] = -1.0;
        assert!(bad.validate().is_err());
        assert!(preset("bgcfnc").unwrap().validate().is_ok());
    }

    #[test]
    fn no_kind_returns_the_input() {
        let x = Tensor::randn([2, 3, 8, 8], (Kind::Float, Device::Cpu));
        let y = AugmentPipe::new(AugmentSpec::default(), 1.0).forward(&x);
        assert!(y.equal(&x));
    }
}
