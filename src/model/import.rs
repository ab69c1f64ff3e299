//! Official networks in: constructor kwargs (stylegan2-ada-pytorch form) -> sg2 config, and official-named state
//! dicts -> an sg2 checkpoint.

use super::checkpoint::{copy_into, read_safetensors, save};
use super::pickle::Official;
use super::{Discriminator, Generator};
use crate::config::{Architecture, Config, ModelConfig};
use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Tensor};

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

/// The value at `path`, None when absent or `null` (Python's None, the official default of optional kwargs).
fn present<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    get(v, path).filter(|x| !x.is_null())
}

/// A kwarg of the wrong type is refused by name: taking the default instead would build another network.
fn typed<'a, T>(v: &'a Value, path: &[&str], what: &str, read: impl Fn(&'a Value) -> Option<T>) -> Result<Option<T>> {
    match present(v, path) {
        None => Ok(None),
        Some(x) => read(x).map(Some).with_context(|| format!("{} = {x}: must be {what}", path.join("."))),
    }
}

fn uint(v: &Value, path: &[&str], default: Option<u64>) -> Result<u32> {
    match typed(v, path, "a non-negative integer", Value::as_u64)? {
        Some(n) => u32::try_from(n).map_err(|_| anyhow::anyhow!("{} = {n}: too large", path.join("."))),
        None => default.map(|d| d as u32).with_context(|| format!("missing {}", path.join("."))),
    }
}

fn float(v: &Value, path: &[&str]) -> Result<Option<f64>> {
    typed(v, path, "a number", Value::as_f64)
}

fn text<'a>(v: &'a Value, path: &[&str]) -> Result<Option<&'a str>> {
    typed(v, path, "a string", Value::as_str)
}

fn arch(v: &Value, path: &[&str], default: Architecture) -> Result<Architecture> {
    match text(v, path)? {
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
    ensure!(kw.get("G").is_some_and(Value::is_object), "kwargs have no \"G\" entry (an object)");
    if let Some(d) = kw.get("D") {
        ensure!(d.is_object(), "kwargs' \"D\" = {d}: must be an object");
    }
    let g = |k: &[&'static str]| [&["G"][..], k].concat();
    let sk = |k: &'static str| g(&["synthesis_kwargs", k]);
    let channel_base = uint(kw, &sk("channel_base"), Some(32768))?;
    if channel_base % 2 != 0 {
        bail!("G.synthesis_kwargs.channel_base = {channel_base}: must be even (fmap_base = channel_base / 2)");
    }
    let mut m = ModelConfig {
        resolution: uint(kw, &g(&["img_resolution"]), None)?,
        channels: uint(kw, &g(&["img_channels"]), None)?,
        c_dim: uint(kw, &g(&["c_dim"]), Some(0))?,
        z_dim: uint(kw, &g(&["z_dim"]), None)?,
        w_dim: uint(kw, &g(&["w_dim"]), None)?,
        mapping_layers: uint(kw, &g(&["mapping_kwargs", "num_layers"]), Some(8))?,
        mapping_lr_mul: float(kw, &g(&["mapping_kwargs", "lr_multiplier"]))?.unwrap_or(0.01),
        fmap_base: channel_base / 2,
        fmap_max: uint(kw, &sk("channel_max"), Some(512))?,
        g_architecture: arch(kw, &sk("architecture"), Architecture::Skip)?,
        num_fp16_res: uint(kw, &sk("num_fp16_res"), Some(0))?,
        conv_clamp: float(kw, &sk("conv_clamp"))?,
        ..ModelConfig::default()
    };
    if let Some(f) = typed(kw, &sk("resample_filter"), "a list of numbers", Value::as_array)? {
        m.resample_filter = f
            .iter()
            .map(|x| x.as_f64().with_context(|| format!("G.synthesis_kwargs.resample_filter: {x} is not a number")))
            .collect::<Result<_>>()?;
    }
    if kw.get("D").is_some() {
        m.d_architecture = arch(kw, &["D", "architecture"], Architecture::Resnet)?;
        m.mbstd_group = uint(kw, &["D", "epilogue_kwargs", "mbstd_group_size"], Some(4))?;
        m.mbstd_features = uint(kw, &["D", "epilogue_kwargs", "mbstd_num_channels"], Some(1))?;
        for (key, g_val) in
            [("channel_base", channel_base), ("channel_max", m.fmap_max), ("img_resolution", m.resolution)]
        {
            let d_val = uint(kw, &["D", key], Some(g_val as u64))?;
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

/// What sg2's networks cannot express: other activations, no noise inputs, mapping widths other than w_dim.
fn check_supported(kw: &Value) -> Result<()> {
    let acts = [
        ["G", "mapping_kwargs", "activation"],
        ["G", "synthesis_kwargs", "activation"],
        ["D", "block_kwargs", "activation"],
        ["D", "mapping_kwargs", "activation"],
        ["D", "epilogue_kwargs", "activation"],
    ];
    for path in acts {
        if let Some(a) = text(kw, &path)?.filter(|a| *a != "lrelu") {
            bail!("{} = '{a}': sg2 networks use lrelu", path.join("."));
        }
    }
    if typed(kw, &["G", "synthesis_kwargs", "use_noise"], "true or false", Value::as_bool)? == Some(false) {
        bail!("G.synthesis_kwargs.use_noise = false: sg2 networks have noise inputs");
    }
    let w_dim = get(kw, &["G", "w_dim"]).and_then(Value::as_u64);
    for key in ["embed_features", "layer_features"] {
        if let Some(n) = get(kw, &["G", "mapping_kwargs", key]).filter(|v| !v.is_null()) {
            if n.as_u64() != w_dim {
                bail!("G.mapping_kwargs.{key} = {n}: sg2's mapping network is w_dim wide");
            }
        }
    }
    Ok(())
}

/// One official state dict and the name its errors carry (a file, or "x.pkl: D").
pub struct Named<'a> {
    pub tensors: &'a BTreeMap<String, Tensor>,
    pub what: String,
}

/// Official state dicts of one checkpoint: the inference generator, optionally the training generator and D.
pub struct StateDicts<'a> {
    pub g_ema: Named<'a>,
    /// Without it the checkpoint's G is a copy of G_ema.
    pub g: Option<Named<'a>>,
    pub d: Option<Named<'a>>,
}

/// Writes an sg2 checkpoint from official kwargs and state dicts; `source` goes into the metadata.
pub fn write_checkpoint(
    kw: &Value,
    nets: &StateDicts,
    mirror: Option<bool>,
    source: &str,
    out: &Path,
) -> Result<Config> {
    check_supported(kw)?;
    let mut config = import_config(config_from_kwargs(kw)?);
    if let Some(m) = mirror {
        config.training.mirror = m;
    }
    let generator = |n: &Named| -> Result<VarStore> {
        let mut vs = VarStore::new(Device::Cpu);
        let _g = Generator::new(&vs.root(), &config.model);
        copy_into(n.tensors, "", &mut vs, &n.what)?;
        Ok(vs)
    };
    let g_ema = generator(&nets.g_ema)?;
    let g = nets.g.as_ref().map(generator).transpose()?;
    let d = match &nets.d {
        Some(n) => {
            let mut vs = VarStore::new(Device::Cpu);
            let _d = Discriminator::new(&vs.root(), &config.model);
            copy_into(n.tensors, "", &mut vs, &n.what)?;
            Some(vs)
        }
        None => None,
    };
    let mut list: Vec<(&str, &VarStore)> = vec![("G", g.as_ref().unwrap_or(&g_ema)), ("G_ema", &g_ema)];
    if let Some(d) = &d {
        list.push(("D", d));
    }
    let mut meta = BTreeMap::new();
    meta.insert("sg2.source".into(), format!("imported from {source}"));
    save(out, &config, &list, &[], &meta)?;
    Ok(config)
}

/// Builds an sg2 checkpoint from official state dicts: G (stored as both G and G_ema) and optionally D.
pub fn import(g_path: &Path, d_path: Option<&Path>, kwargs_path: &Path, out: &Path) -> Result<Config> {
    let text =
        std::fs::read_to_string(kwargs_path).with_context(|| format!("{}: cannot read", kwargs_path.display()))?;
    let kw: Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", kwargs_path.display()))?;
    check_supported(&kw).and_then(|_| config_from_kwargs(&kw)).with_context(|| format!("{}", kwargs_path.display()))?;
    let (g_tensors, _) = read_safetensors(g_path)?;
    let d_tensors = d_path.map(|p| read_safetensors(p).map(|t| t.0)).transpose()?;
    let named = |tensors, path: &Path| Named { tensors, what: path.display().to_string() };
    let nets = StateDicts {
        g_ema: named(&g_tensors, g_path),
        g: None,
        d: d_tensors.as_ref().zip(d_path).map(|(t, p)| named(t, p)),
    };
    write_checkpoint(&kw, &nets, None, &g_path.display().to_string(), out)
}

/// Builds an sg2 checkpoint from an official pickle (TensorFlow or stylegan2-ada-pytorch), without Python.
pub fn import_pickle(pkl: &Path, out: &Path) -> Result<(Config, Official)> {
    let o = super::pickle::read(pkl)?;
    let label = pkl.display().to_string();
    let named = |tensors, net: &str| Named { tensors, what: net.to_string() };
    let nets = StateDicts {
        g_ema: named(&o.g_ema, if o.kind == "TensorFlow" { "Gs" } else { "G_ema" }),
        g: o.g.as_ref().map(|t| named(t, "G")),
        d: o.d.as_ref().map(|t| named(t, "D")),
    };
    let config = write_checkpoint(&o.kwargs, &nets, o.mirror, &label, out).with_context(|| label.clone())?;
    Ok((config, o))
}
