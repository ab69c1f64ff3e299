//! The TOML schema: one typed value that mirrors the official StyleGAN2 knobs.
//!
//! Every section rejects unknown keys, every value is validated with a message that names the file, the key and the
//! reason, and `--set section.key=value` overrides any key before validation. `docs/CONFIG.md` documents each key.

use serde::{Deserialize, Serialize};
use std::path::Path;

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

/// Reads, overrides and validates a config file.
pub fn load(path: &Path, overrides: &[String]) -> Result<Config, ConfigError> {
    load_labeled(path, &labeled_sets(overrides))
}

/// `--set` overrides, each labelled as itself for messages.
pub fn labeled_sets(overrides: &[String]) -> Vec<(String, String)> {
    overrides.iter().map(|ov| (format!("--set {ov}"), ov.clone())).collect()
}

/// As [`load`], with each override given as (the option that made it, `key=value`): an error about an overridden
/// key names that option rather than the file.
pub fn load_labeled(path: &Path, overrides: &[(String, String)]) -> Result<Config, ConfigError> {
    // Read with a cap: a device such as /dev/zero would otherwise fill memory (a pipe, `<(...)`, is fine).
    let cannot = |e: std::io::Error| ConfigError(format!("{}: cannot read: {e}", path.display()));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = vec![];
    std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_CONFIG_BYTES + 1), &mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError(format!(
            "{}: over {MAX_CONFIG_BYTES} bytes; a config is a small TOML file",
            path.display()
        )));
    }
    let text = String::from_utf8(bytes).map_err(|_| ConfigError(format!("{}: not UTF-8 text", path.display())))?;
    parse_labeled(&text, &path.display().to_string(), overrides)
}

const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Parses TOML text (named `origin` in messages), applies `key=value` overrides, validates.
pub fn parse(text: &str, origin: &str, overrides: &[String]) -> Result<Config, ConfigError> {
    parse_labeled(text, origin, &labeled_sets(overrides))
}

/// As [`parse`], with labelled overrides (see [`load_labeled`]).
pub fn parse_labeled(text: &str, origin: &str, overrides: &[(String, String)]) -> Result<Config, ConfigError> {
    let mut value: toml::Table =
        text.parse().map_err(|e: toml::de::Error| ConfigError(format!("{origin}: {}", one_line(&e.to_string()))))?;
    for (label, ov) in overrides {
        apply_override(&mut value, ov).map_err(|e| ConfigError(format!("{label}: {e}")))?;
    }
    // The last override of the key a message is about, else the file, is where the value came from.
    let source_of = |key: &str| {
        // `key` may lie inside an overridden table (augment.multipliers.rotate under augment.multipliers).
        let covers = |k: &str| key == k || key.strip_prefix(k).is_some_and(|rest| rest.starts_with('.'));
        let set = overrides.iter().rev().find(|(_, ov)| ov.split_once('=').is_some_and(|(k, _)| covers(k.trim())));
        set.map_or(origin, |(label, _)| label.as_str()).to_string()
    };
    let cfg: Config = toml::Value::Table(value).try_into().map_err(|e: toml::de::Error| {
        let msg = one_line(&e.to_string());
        let key = msg.rsplit_once(" in ").map_or("", |(_, k)| k.trim().trim_matches('`'));
        ConfigError(format!("{}: {msg}", source_of(key)))
    })?;
    let mut cfg = cfg;
    if std::mem::take(&mut cfg.training.rollback) {
        cfg.training.nan_policy = NanPolicy::Rollback;
    }
    cfg.validate().map_err(|e| ConfigError(format!("{}: {e}", source_of(e.split(" = ").next().unwrap_or("")))))?;
    Ok(cfg)
}

fn one_line(s: &str) -> String {
    s.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('|')).collect::<Vec<_>>().join(" ")
}

/// `section.key=value`; the value is parsed as TOML (number, bool, array), else taken as a string.
fn apply_override(root: &mut toml::Table, ov: &str) -> Result<(), String> {
    let (key, raw) = ov.split_once('=').ok_or("expected section.key=value")?;
    let key = key.trim();
    let parts: Vec<&str> = key.split('.').collect();
    if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
        return Err(format!("'{key}' is not of the form section.key"));
    }
    let value = parse_value(raw.trim());
    let section = root.entry(parts[0].to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let table = section.as_table_mut().ok_or(format!("'{}' is not a section", parts[0]))?;
    table.insert(parts[1].to_string(), value);
    Ok(())
}

fn parse_value(raw: &str) -> toml::Value {
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn check(ok: bool, key: &str, value: impl std::fmt::Display, reason: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{key} = {value}: {reason}"))
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        let (m, t, l) = (&self.model, &self.training, &self.logging);
        // NaN passes every `>` test and infinity most: refuse both first.
        let floats = [
            ("model.mapping_lr_mul", m.mapping_lr_mul),
            ("model.conv_clamp", m.conv_clamp.unwrap_or(0.0)),
            ("training.total_kimg", t.total_kimg),
            ("training.g_lr", t.g_lr),
            ("training.d_lr", t.d_lr),
            ("training.adam_eps", t.adam_eps),
            ("training.r1_gamma", t.r1_gamma),
            ("training.pl_weight", t.pl_weight),
            ("training.ema_kimg", t.ema_kimg),
            ("training.ema_rampup", t.ema_rampup.unwrap_or(0.0)),
            ("logging.tick_kimg", l.tick_kimg),
            ("logging.collapse_factor", l.collapse_factor),
        ];
        for (key, v) in floats {
            check(v.is_finite(), key, v, "must be a finite number")?;
        }
        for (key, sched) in [
            ("training.g_lr_schedule", &t.g_lr_schedule),
            ("training.d_lr_schedule", &t.d_lr_schedule),
            ("training.r1_gamma_schedule", &t.r1_gamma_schedule),
        ] {
            let finite = sched.iter().flatten().all(|v| v.is_finite());
            check(finite, key, format!("{sched:?}"), "must hold finite numbers")?;
        }
        check(
            m.resample_filter.iter().all(|v| v.is_finite()) && m.resample_filter.len() <= 16,
            "model.resample_filter",
            format!("{:?}", m.resample_filter),
            "must hold at most 16 finite numbers",
        )?;
        // Upper bounds keep a typo from asking for terabytes (sizes grow with these).
        let max_res = crate::data::shards::MAX_RESOLUTION as u32;
        check(
            m.resolution >= 8 && m.resolution <= max_res && m.resolution.is_power_of_two(),
            "model.resolution",
            m.resolution,
            &format!("must be a power of two from 8 to {max_res}"),
        )?;
        check(m.channels == 1 || m.channels == 3, "model.channels", m.channels, "must be 1 or 3 (grayscale or RGB)")?;
        check(m.c_dim <= crate::data::shards::MAX_CLASSES, "model.c_dim", m.c_dim, "must be at most 1048576")?;
        check((1..=8192).contains(&m.z_dim), "model.z_dim", m.z_dim, "must be from 1 to 8192")?;
        check((1..=8192).contains(&m.w_dim), "model.w_dim", m.w_dim, "must be from 1 to 8192")?;
        check((1..=64).contains(&m.mapping_layers), "model.mapping_layers", m.mapping_layers, "must be from 1 to 64")?;
        check(m.mapping_lr_mul > 0.0, "model.mapping_lr_mul", m.mapping_lr_mul, "must be > 0")?;
        check((1..=1 << 24).contains(&m.fmap_base), "model.fmap_base", m.fmap_base, "must be from 1 to 16777216")?;
        check((1..=8192).contains(&m.fmap_max), "model.fmap_max", m.fmap_max, "must be from 1 to 8192")?;
        check(m.mbstd_group >= 1, "model.mbstd_group", m.mbstd_group, "must be >= 1")?;
        let c4 = m.channels_at(4) as u32;
        check(
            m.mbstd_features == 0 || c4.is_multiple_of(m.mbstd_features),
            "model.mbstd_features",
            m.mbstd_features,
            "must divide the channel count at 4x4",
        )?;
        check(
            !m.resample_filter.is_empty() && m.resample_filter.iter().sum::<f64>() != 0.0,
            "model.resample_filter",
            format!("{:?}", m.resample_filter),
            "must be a non-empty filter with a non-zero sum",
        )?;
        check(
            m.num_fp16_res <= m.resolution_log2(),
            "model.num_fp16_res",
            m.num_fp16_res,
            "cannot exceed the number of resolutions",
        )?;
        if let Some(c) = m.conv_clamp {
            check(c > 0.0, "model.conv_clamp", c, "must be > 0 (omit the key for no clamping)")?;
        }

        check((1..=65536).contains(&t.batch), "training.batch", t.batch, "must be from 1 to 65536")?;
        // D's minibatch-std splits the batch into groups of min(mbstd_group, batch), as the official.
        let group = m.mbstd_group.min(t.batch);
        check(
            m.mbstd_features == 0 || t.batch.is_multiple_of(group),
            "training.batch",
            t.batch,
            &format!("must be a multiple of model.mbstd_group = {} (D's minibatch-std groups)", m.mbstd_group),
        )?;
        check(t.total_kimg > 0.0, "training.total_kimg", t.total_kimg, "must be > 0")?;
        check(t.g_lr > 0.0, "training.g_lr", t.g_lr, "must be > 0")?;
        check(t.d_lr > 0.0, "training.d_lr", t.d_lr, "must be > 0")?;
        check((0.0..1.0).contains(&t.adam_beta1), "training.adam_beta1", t.adam_beta1, "must be in [0, 1)")?;
        check((0.0..1.0).contains(&t.adam_beta2), "training.adam_beta2", t.adam_beta2, "must be in [0, 1)")?;
        check(t.adam_eps > 0.0, "training.adam_eps", t.adam_eps, "must be > 0")?;
        check(t.r1_gamma >= 0.0, "training.r1_gamma", t.r1_gamma, "must be >= 0")?;
        check(t.pl_weight >= 0.0, "training.pl_weight", t.pl_weight, "must be >= 0")?;
        check((0.0..=1.0).contains(&t.pl_decay), "training.pl_decay", t.pl_decay, "must be in [0, 1]")?;
        check(t.pl_batch_shrink >= 1, "training.pl_batch_shrink", t.pl_batch_shrink, "must be >= 1")?;
        check(
            (0.0..=1.0).contains(&t.style_mixing_prob),
            "training.style_mixing_prob",
            t.style_mixing_prob,
            "must be in [0, 1]",
        )?;
        check(t.ema_kimg >= 0.0, "training.ema_kimg", t.ema_kimg, "must be >= 0")?;
        if let Some(r) = t.ema_rampup {
            check(r > 0.0, "training.ema_rampup", r, "must be > 0 (omit the key for none)")?;
        }
        check(
            t.rollback_lr_factor > 0.0 && t.rollback_lr_factor <= 1.0,
            "training.rollback_lr_factor",
            t.rollback_lr_factor,
            "must be in (0, 1]",
        )?;
        let d_layers = m.d_layer_order().len() as u32;
        check(
            t.freeze_d <= d_layers,
            "training.freeze_d",
            t.freeze_d,
            &format!("D has {d_layers} layers before its epilogue at this resolution"),
        )?;
        for (key, sched, positive) in [
            ("training.g_lr_schedule", &t.g_lr_schedule, true),
            ("training.d_lr_schedule", &t.d_lr_schedule, true),
            ("training.r1_gamma_schedule", &t.r1_gamma_schedule, false),
        ] {
            let shown = format!("{sched:?}");
            for w in sched.windows(2) {
                check(w[0][0] <= w[1][0], key, &shown, "points must be sorted by kimg")?;
            }
            for p in sched {
                check(p[0] >= 0.0, key, &shown, "kimg must be >= 0")?;
                let ok = if positive { p[1] > 0.0 } else { p[1] >= 0.0 };
                check(ok, key, &shown, if positive { "values must be > 0" } else { "values must be >= 0" })?;
            }
        }

        let a = &self.augment;
        check(
            AUGMENT_PIPES.contains(&a.pipe.as_str()),
            "augment.pipe",
            &a.pipe,
            &format!("one of {}", AUGMENT_PIPES.join(" ")),
        )?;
        check((0.0..=1.0).contains(&a.p), "augment.p", a.p, "must be in [0, 1]")?;
        check((0.0..=1.0).contains(&a.target), "augment.target", a.target, "must be in [0, 1]")?;
        check(a.interval >= 1, "augment.interval", a.interval, "must be >= 1")?;
        check(a.kimg > 0.0, "augment.kimg", a.kimg, "must be > 0")?;
        for (k, v) in &a.multipliers {
            check(
                AUGMENT_KINDS.contains(&k.as_str()),
                "augment.multipliers",
                k,
                &format!("unknown kind; known: {}", AUGMENT_KINDS.join(" ")),
            )?;
            check(*v >= 0.0 && v.is_finite(), &format!("augment.multipliers.{k}"), v, "must be >= 0")?;
        }
        if a.mode == AugmentMode::Fixed {
            check(a.p > 0.0, "augment.p", a.p, "mode = \"fixed\" needs p > 0")?;
        }

        check(l.tick_kimg > 0.0, "logging.tick_kimg", l.tick_kimg, "must be > 0")?;
        // A ratio of at most 1 would flag every tick.
        let cf = l.collapse_factor;
        check(cf == 0.0 || cf > 1.0, "logging.collapse_factor", cf, "must be above 1, or 0 (off)")?;
        for (key, n) in
            [("logging.metrics_num_gen", l.metrics_num_gen), ("logging.metrics_num_real", l.metrics_num_real)]
        {
            if let Some(n) = n {
                check((1..=10_000_000).contains(&n), key, n, "must be from 1 to 10000000")?;
            }
        }
        for (key, n) in [("logging.grid_w", l.grid_w), ("logging.grid_h", l.grid_h)] {
            check((1..=32).contains(&n), key, n, "must be from 1 to 32")?;
        }
        Ok(())
    }

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
