//! The TOML schema: one typed value that mirrors the official StyleGAN2 knobs.
//!
//! Every section rejects unknown keys, every value is validated with a message that names the file, the key and the
//! reason, and `--set section.key=value` overrides any key before validation. `docs/CONFIG.md` documents each key.

use serde::{Deserialize, Serialize};

/// A configuration error: `file: key = value: reason`, or a parse error with the file name.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub training: TrainingConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
    #[serde(default)]
    pub augment: AugmentConfig,
}

/// How D's inputs are augmented (stylegan2-ada-pytorch `--aug`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AugmentMode {
    /// No augmentation (plain StyleGAN2).
    Noaug,
    /// A fixed probability `p`.
    Fixed,
    /// Adaptive: `p` follows the overfitting heuristic toward `target`, starting at `p`.
    Ada,
}

/// The official augmentation presets (`--augpipe`).
pub const AUGMENT_PIPES: [&str; 11] =
    ["blit", "geom", "color", "filter", "noise", "cutout", "bg", "bgc", "bgcf", "bgcfn", "bgcfnc"];

/// The official augmentation kinds in the order the pipe applies them, the keys of `augment.multipliers`.
pub const AUGMENT_KINDS: [&str; 15] = [
    "xflip",
    "rotate90",
    "xint",
    "scale",
    "rotate",
    "aniso",
    "xfrac",
    "brightness",
    "contrast",
    "lumaflip",
    "hue",
    "saturation",
    "imgfilter",
    "noise",
    "cutout",
];

/// Adaptive discriminator augmentation: the official `--aug --augpipe --p --target` and `ada_interval`,
/// `ada_kimg`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentConfig {
    pub mode: AugmentMode,
    /// The preset (`bgc`: blit, geometric and color, the official default).
    pub pipe: String,
    /// The fixed probability, or ADA's starting value.
    pub p: f64,
    /// ADA's target for E[sign(D(real))] (official `ada_target`).
    pub target: f64,
    /// Minibatches between adjustments of p (official `ada_interval`).
    pub interval: u32,
    /// kimg for p to move by 1 (official `ada_kimg`).
    pub kimg: f64,
    /// Per-kind multipliers replacing the preset's (e.g. `{ rotate = 0 }` drops arbitrary rotations).
    pub multipliers: std::collections::BTreeMap<String, f64>,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            mode: AugmentMode::Noaug,
            pipe: "bgc".into(),
            p: 0.0,
            target: 0.6,
            interval: 4,
            kimg: 500.0,
            multipliers: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    Orig,
    Skip,
    Resnet,
}

impl Architecture {
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::Orig => "orig",
            Architecture::Skip => "skip",
            Architecture::Resnet => "resnet",
        }
    }
}

/// How training runs the modulated convolutions (`training.modconv`); both forms give the official values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModConvSetting {
    /// Fused on CUDA, unfused on CPU: the faster form on each (BENCHMARKS.md).
    #[default]
    Auto,
    Fused,
    Unfused,
}

/// The networks' shape. Names follow the TF config (`fmap_base`) where users know them; `channel_base()` gives the
/// stylegan2-ada-pytorch equivalent (2 x fmap_base).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub resolution: u32,
    pub channels: u32,
    /// Number of classes for a conditional network (0 = unconditional).
    pub c_dim: u32,
    pub z_dim: u32,
    pub w_dim: u32,
    pub mapping_layers: u32,
    pub mapping_lr_mul: f64,
    pub fmap_base: u32,
    pub fmap_max: u32,
    pub g_architecture: Architecture,
    pub d_architecture: Architecture,
    pub mbstd_group: u32,
    pub mbstd_features: u32,
    pub resample_filter: Vec<f64>,
    /// Number of top resolutions run in fp16 on CUDA (CPU always runs fp32).
    pub num_fp16_res: u32,
    /// Clamp for activations in fp16 layers; absent = no clamping.
    pub conv_clamp: Option<f64>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            resolution: 256,
            channels: 3,
            c_dim: 0,
            z_dim: 512,
            w_dim: 512,
            mapping_layers: 8,
            mapping_lr_mul: 0.01,
            fmap_base: 16384,
            fmap_max: 512,
            g_architecture: Architecture::Skip,
            d_architecture: Architecture::Resnet,
            mbstd_group: 4,
            mbstd_features: 1,
            resample_filter: vec![1.0, 3.0, 3.0, 1.0],
            num_fp16_res: 0,
            conv_clamp: None,
        }
    }
}

impl ModelConfig {
    /// stylegan2-ada-pytorch's `channel_base` (its unit is twice the TF `fmap_base`).
    pub fn channel_base(&self) -> u32 {
        self.fmap_base * 2
    }
    /// Feature maps at resolution `res`: `min(channel_base // res, fmap_max)` as the official code computes it.
    pub fn channels_at(&self, res: u32) -> i64 {
        ((self.channel_base() / res).min(self.fmap_max)).max(1) as i64
    }
    pub fn resolution_log2(&self) -> u32 {
        self.resolution.trailing_zeros()
    }
    /// D's block layers in the official order (from the input: per block `fromrgb` where it exists, `conv0`,
    /// `conv1`, then `skip` for resnet), the order Freeze-D (`freeze_layers`) counts them in; the epilogue is never
    /// counted.
    pub fn d_layer_order(&self) -> Vec<String> {
        let arch = self.d_architecture;
        let mut out = vec![];
        for r_log2 in (3..=self.resolution_log2()).rev() {
            let res = 1u32 << r_log2;
            if res == self.resolution || arch == Architecture::Skip {
                out.push(format!("b{res}.fromrgb"));
            }
            out.push(format!("b{res}.conv0"));
            out.push(format!("b{res}.conv1"));
            if arch == Architecture::Resnet {
                out.push(format!("b{res}.skip"));
            }
        }
        out
    }

    /// Number of w vectors the synthesis network consumes.
    pub fn num_ws(&self) -> i64 {
        let log2 = self.resolution_log2() as i64;
        // 1 conv at 4x4, 2 per block above, plus the last toRGB.
        1 + 2 * (log2 - 2) + 1
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// Minibatch size (all devices together).
    pub batch: u32,
    pub total_kimg: f64,
    pub g_lr: f64,
    pub d_lr: f64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    pub r1_gamma: f64,
    pub g_reg_interval: u32,
    pub d_reg_interval: u32,
    pub pl_weight: f64,
    pub pl_decay: f64,
    pub pl_batch_shrink: u32,
    pub style_mixing_prob: f64,
    /// Half-life of the generator EMA, in thousands of images.
    pub ema_kimg: f64,
    /// EMA ramp-up (ema_kimg limited to ema_rampup x current kimg); absent = none.
    pub ema_rampup: Option<f64>,
    pub mirror: bool,
    pub seed: u64,
    /// Piecewise-linear schedules: `[[kimg, value], ...]`, sorted by kimg; constant outside. Empty = the fixed value.
    pub g_lr_schedule: Vec<[f64; 2]>,
    pub d_lr_schedule: Vec<[f64; 2]>,
    pub r1_gamma_schedule: Vec<[f64; 2]>,
    /// Earlier name of `nan_policy = "rollback"`: still read (true selects it), never written.
    #[serde(skip_serializing)]
    pub rollback: bool,
    pub rollback_lr_factor: f64,
    /// Rollbacks allowed in a row (without a new snapshot in between) before the run stops.
    pub max_rollbacks: u32,
    /// Modulated convolution form in training.
    pub modconv: ModConvSetting,
    /// What a non-finite gradient does: "official" (zeroed / clamped as the official loop does, training goes on),
    /// "stop" or "rollback" (see docs/TRAINING.md).
    pub nan_policy: NanPolicy,
    /// Let CUDA use TF32 for matmuls and convolutions (the official trains and evaluates with it off).
    pub allow_tf32: bool,
    /// Run the CPU convolutions in bfloat16 (fp32 accumulation and outputs): faster on CPUs with AMX or
    /// AVX512-BF16, less exact. Off as the official (which has no CPU fast path).
    pub cpu_bf16: bool,
    /// Run the CPU's fp32 3x3 convolutions (8x8 pixels and up) and their gradients by Winograd's F(4x4, 3x3):
    /// still fp32, about 2x faster at 32x32 with 64-128 channels, a few 1e-6 (of the output's scale) more rounding
    /// than the direct convolution. Training only: generation and metrics always convolve directly.
    pub cpu_winograd: bool,
    /// Freeze-D: the first N layers of D, counted from the input as the official counts them, are not trained.
    pub freeze_d: u32,
}

/// The response to a non-finite loss or gradient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NanPolicy {
    /// As the official loop: NaN gradients become 0 and +-inf +-1e5 before every optimizer step; training goes on.
    Official,
    /// Stop the run with an error naming the phase and minibatch; no optimizer step uses the bad gradient.
    Stop,
    /// Reload the last snapshot and continue with lower learning rates (`rollback_lr_factor`, `max_rollbacks`).
    Rollback,
}

impl Default for TrainingConfig {
    fn default() -> Self {
        TrainingConfig {
            batch: 32,
            total_kimg: 25000.0,
            g_lr: 0.002,
            d_lr: 0.002,
            adam_beta1: 0.0,
            adam_beta2: 0.99,
            adam_eps: 1e-8,
            r1_gamma: 10.0,
            g_reg_interval: 4,
            d_reg_interval: 16,
            pl_weight: 2.0,
            pl_decay: 0.01,
            pl_batch_shrink: 2,
            style_mixing_prob: 0.9,
            ema_kimg: 10.0,
            ema_rampup: None,
            mirror: false,
            seed: 0,
            g_lr_schedule: vec![],
            d_lr_schedule: vec![],
            r1_gamma_schedule: vec![],
            rollback: false,
            rollback_lr_factor: 0.5,
            max_rollbacks: 3,
            modconv: ModConvSetting::Auto,
            nan_policy: NanPolicy::Official,
            allow_tf32: false,
            cpu_bf16: false,
            cpu_winograd: true,
            freeze_d: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Length of a tick in thousands of images.
    pub tick_kimg: f64,
    /// Checkpoint every N ticks (0 = only at the end).
    pub snapshot_ticks: u32,
    /// Fakes grid every N ticks (0 = only at the start and end).
    pub image_snapshot_ticks: u32,
    /// Number of recent snapshots kept (0 = keep all).
    pub keep_snapshots: u32,
    /// Metrics computed at each snapshot, e.g. ["fid50k_full"].
    pub metrics: Vec<String>,
    /// Generated / real image counts for those metrics (absent: each metric's own, e.g. 50k).
    pub metrics_num_gen: Option<u64>,
    pub metrics_num_real: Option<u64>,
    /// Seeds of the fixed fakes grid: its size is grid_w x grid_h.
    pub grid_w: u32,
    pub grid_h: u32,
    /// Flag a tick whose mean D or G loss changed by more than this factor from the previous tick (0 = off).
    pub collapse_factor: f64,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            tick_kimg: 4.0,
            snapshot_ticks: 50,
            image_snapshot_ticks: 50,
            keep_snapshots: 5,
            metrics: vec![],
            metrics_num_gen: None,
            metrics_num_real: None,
            grid_w: 8,
            grid_h: 4,
            collapse_factor: 3.0,
        }
    }
}

mod load;
mod validate;
pub use load::{labeled_sets, load, load_labeled, parse, parse_labeled};

impl Config {
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }
}

/// Evaluates a piecewise-linear `[[kimg, value], ...]` schedule; `base` when it is empty.
pub fn schedule_value(schedule: &[[f64; 2]], base: f64, kimg: f64) -> f64 {
    let (Some(first), Some(last)) = (schedule.first(), schedule.last()) else {
        return base;
    };
    if kimg <= first[0] {
        return first[1];
    }
    if kimg >= last[0] {
        return last[1];
    }
    for w in schedule.windows(2) {
        let ([k0, v0], [k1, v1]) = (w[0], w[1]);
        if kimg >= k0 && kimg < k1 {
            return v0 + (v1 - v0) * (kimg - k0) / (k1 - k0);
        }
    }
    last[1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_piecewise_linear_and_constant_outside() {
        let s = [[0.0, 1.0], [10.0, 3.0], [10.0, 0.5]];
        assert_eq!(schedule_value(&[], 7.0, 5.0), 7.0);
        assert_eq!(schedule_value(&s, 7.0, 0.0), 1.0);
        assert!((schedule_value(&s, 7.0, 5.0) - 2.0).abs() < 1e-12);
        // Two points at the same kimg make a step.
        assert_eq!(schedule_value(&s, 7.0, 10.0), 0.5);
        assert_eq!(schedule_value(&s, 7.0, 99.0), 0.5);
    }

    #[test]
    fn channel_formula_matches_official() {
        let m = ModelConfig { fmap_base: 16384, fmap_max: 512, resolution: 1024, ..Default::default() };
        assert_eq!(m.channels_at(4), 512);
        assert_eq!(m.channels_at(64), 512);
        assert_eq!(m.channels_at(128), 256);
        assert_eq!(m.channels_at(1024), 32);
        assert_eq!(m.num_ws(), 18);
        let m = ModelConfig { fmap_base: 1024, fmap_max: 64, resolution: 32, ..Default::default() };
        assert_eq!(m.channels_at(32), 64);
        assert_eq!(m.num_ws(), 8);
    }

    #[test]
    fn overrides_apply_before_validation() {
        let cfg = parse("", "x.toml", &["training.r1_gamma=5".into(), "model.resolution=32".into()]).unwrap();
        assert_eq!(cfg.training.r1_gamma, 5.0);
        assert_eq!(cfg.model.resolution, 32);
        let err = parse("", "x.toml", &["training.r1_gamma=-1".into()]).unwrap_err().to_string();
        // An overridden key is named by its override, a key from the file by the file.
        assert_eq!(err, "--set training.r1_gamma=-1: training.r1_gamma = -1: must be >= 0");
        let err =
            parse("[training]\nr1_gamma = -1\n", "x.toml", &["training.r1_gamma=-1".into(), "training.d_lr=1".into()]);
        assert!(err.unwrap_err().to_string().starts_with("--set training.r1_gamma=-1: "));
        let err = parse("[training]\nr1_gamma = -1\n", "x.toml", &["training.d_lr=1".into()]).unwrap_err().to_string();
        assert_eq!(err, "x.toml: training.r1_gamma = -1: must be >= 0");
        let err = parse("", "x.toml", &["training.batch=\"a\"".into()]).unwrap_err().to_string();
        assert!(err.starts_with("--set training.batch=\"a\": ") && err.contains("training.batch"), "{err}");
        let err = parse("", "x.toml", &["augment.multipliers={rotate=-5}".into()]).unwrap_err().to_string();
        assert!(err.starts_with("--set augment.multipliers={rotate=-5}: augment.multipliers.rotate = -5"), "{err}");
        let err = parse("", "x.toml", &["r1_gamma=1".into()]).unwrap_err().to_string();
        assert!(err.contains("not of the form section.key"), "{err}");
    }

    #[test]
    fn modconv_reads_and_writes_lowercase_names() {
        let cfg = parse("[training]\nmodconv = \"unfused\"\n", "a.toml", &[]).unwrap();
        assert_eq!(cfg.training.modconv, ModConvSetting::Unfused);
        assert!(cfg.to_toml().contains("modconv = \"unfused\""), "{}", cfg.to_toml());
        let cfg = parse("", "a.toml", &["training.modconv=fused".into()]).unwrap();
        assert_eq!(cfg.training.modconv, ModConvSetting::Fused);
        assert_eq!(parse("", "a.toml", &[]).unwrap().training.modconv, ModConvSetting::Auto);
        let err = parse("[training]\nmodconv = \"fast\"\n", "a.toml", &[]).unwrap_err().to_string();
        assert!(err.starts_with("a.toml: ") && err.contains("fast") && err.contains("unfused"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_file_name() {
        let err = parse("[training]\nr1_gama = 3\n", "cfg/a.toml", &[]).unwrap_err().to_string();
        assert!(err.starts_with("cfg/a.toml: "), "{err}");
        assert!(err.contains("r1_gama"), "{err}");
    }
}
