//! Official networks in: constructor kwargs (stylegan2-ada-pytorch form) -> sg2 config, and official-named state
//! dicts -> an sg2 checkpoint.

use super::checkpoint::{copy_into, read_safetensors, save};
use super::{Discriminator, Generator};
use crate::config::{Architecture, Config, ModelConfig};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use tch::nn::VarStore;
use tch::Device;

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn uint(v: &Value, path: &[&str], default: Option<u64>) -> Result<u32> {
    match get(v, path) {
        Some(x) => {
            x.as_u64().map(|n| n as u32).with_context(|| format!("{} must be a non-negative integer", path.join(".")))
        }
        None => default.map(|d| d as u32).with_context(|| format!("missing {}", path.join("."))),
    }
}

fn arch(v: &Value, path: &[&str], default: Architecture) -> Result<Architecture> {
    match get(v, path).and_then(Value::as_str) {
        None => Ok(default),
        Some("orig") => Ok(Architecture::Orig),
        Some("skip") => Ok(Architecture::Skip),
        Some("resnet") => Ok(Architecture::Resnet),
        Some(other) => bail!("{} = '{other}': expected orig, skip or resnet", path.join(".")),
    }
}

/// The model config described by official kwargs `{"G": {...}, "D": {...}}` (D optional). The official
/// `channel_base` is twice the TF `fmap_base` that sg2's config uses.
pub fn config_from_kwargs(kw: &Value) -> Result<ModelConfig> {
    let g = kw.get("G").context("kwargs have no \"G\" entry")?;
    let d = kw.get("D");
    fn sk(k: &str) -> [&str; 2] {
        ["synthesis_kwargs", k]
    }
    let channel_base = uint(g, &sk("channel_base"), Some(32768))?;
    if channel_base % 2 != 0 {
        bail!("G.synthesis_kwargs.channel_base = {channel_base}: must be even (fmap_base = channel_base / 2)");
    }
    let mut m = ModelConfig {
        resolution: uint(g, &["img_resolution"], None)?,
        channels: uint(g, &["img_channels"], None)?,
        c_dim: uint(g, &["c_dim"], Some(0))?,
        z_dim: uint(g, &["z_dim"], None)?,
        w_dim: uint(g, &["w_dim"], None)?,
        mapping_layers: uint(g, &["mapping_kwargs", "num_layers"], Some(8))?,
        mapping_lr_mul: get(g, &["mapping_kwargs", "lr_multiplier"]).and_then(Value::as_f64).unwrap_or(0.01),
        fmap_base: channel_base / 2,
        fmap_max: uint(g, &sk("channel_max"), Some(512))?,
        g_architecture: arch(g, &sk("architecture"), Architecture::Skip)?,
        num_fp16_res: uint(g, &sk("num_fp16_res"), Some(0))?,
        conv_clamp: get(g, &sk("conv_clamp")).and_then(Value::as_f64),
        ..ModelConfig::default()
    };
    if let Some(f) = get(g, &sk("resample_filter")).and_then(Value::as_array) {
        m.resample_filter =
            f.iter().map(|x| x.as_f64().context("resample_filter must hold numbers")).collect::<Result<_>>()?;
    }
    if let Some(d) = d {
        m.d_architecture = arch(d, &["architecture"], Architecture::Resnet)?;
        m.mbstd_group = uint(d, &["epilogue_kwargs", "mbstd_group_size"], Some(4))?;
        m.mbstd_features = uint(d, &["epilogue_kwargs", "mbstd_num_channels"], Some(1))?;
        for (key, g_val) in
            [("channel_base", channel_base), ("channel_max", m.fmap_max), ("img_resolution", m.resolution)]
        {
            let d_val = uint(d, &[key], Some(g_val as u64))?;
            if d_val != g_val {
                bail!("D.{key} = {d_val} differs from G's {g_val}; sg2 networks share one value");
            }
        }
    }
    let cfg = import_config(m);
    cfg.validate().map_err(|e| anyhow::anyhow!("kwargs describe an unsupported network: {e}"))?;
    Ok(cfg.model)
}

/// The config stored with an imported network: its model and default training settings, with the batch raised to a
/// multiple of the network's minibatch-std group (an official network trained with groups of 3 gets batch 33), so
/// the checkpoint validates and can be fine-tuned as it is.
fn import_config(model: ModelConfig) -> Config {
    let mut cfg = Config { model, ..Config::default() };
    let group = cfg.model.mbstd_group.max(1);
    cfg.training.batch = cfg.training.batch.next_multiple_of(group);
    cfg
}

/// Builds an sg2 checkpoint from official state dicts: G (stored as both G and G_ema) and optionally D.
pub fn import(g_path: &Path, d_path: Option<&Path>, kwargs_path: &Path, out: &Path) -> Result<Config> {
    let text =
        std::fs::read_to_string(kwargs_path).with_context(|| format!("{}: cannot read", kwargs_path.display()))?;
    let kw: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", kwargs_path.display()))?;
    let model = config_from_kwargs(&kw).with_context(|| format!("{}", kwargs_path.display()))?;
    let config = import_config(model);

    let (g_tensors, _) = read_safetensors(g_path)?;
    let mut g_vs = VarStore::new(Device::Cpu);
    let _g = Generator::new(&g_vs.root(), &config.model);
    copy_into(&g_tensors, "", &mut g_vs, &g_path.display().to_string())?;

    let mut d_vs = VarStore::new(Device::Cpu);
    if let Some(d_path) = d_path {
        let (d_tensors, _) = read_safetensors(d_path)?;
        let _d = Discriminator::new(&d_vs.root(), &config.model);
        copy_into(&d_tensors, "", &mut d_vs, &d_path.display().to_string())?;
    }
    let mut nets: Vec<(&str, &VarStore)> = vec![("G", &g_vs), ("G_ema", &g_vs)];
    if d_path.is_some() {
        nets.push(("D", &d_vs));
    }
    let mut meta = BTreeMap::new();
    meta.insert("sg2.source".into(), format!("imported from {}", g_path.display()));
    save(out, &config, &nets, &[], &meta)?;
    Ok(config)
}
