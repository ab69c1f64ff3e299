//! NVlabs/stylegan2 TensorFlow pickles: a tuple `(G, D, Gs)` of `dnnlib.tflib.network.Network` states. The
//! variables are renamed to the official PyTorch names with the transposes, flips and offsets of
//! stylegan2-ada-pytorch's `legacy.py`: `[kh, kw, in, out] -> [out, in, kh, kw]`, dense `[in, out] -> [out, in]`,
//! upsampling and skip kernels of G flipped spatially, `mod_bias + 1`, `noiseN` to the layers' `noise_const`.

use super::array::Array;
use super::globals::{as_array, Global};
use super::to_json;
use super::value::Value;
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value as Json};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use tch::{Kind, Tensor};

pub type StateDict = BTreeMap<String, Tensor>;

/// Whether `v` is the `(G, D, Gs)` tuple of a TF pickle.
pub fn is_tf(v: &Value) -> bool {
    matches!(v, Value::Tuple(t) if t.len() == 3 && t.iter().all(|n| n.object_class() == Some(Global::Network)))
}

/// One network's static kwargs (with the names asked for) and all variables by full name (`synthesis/4x4/Conv/...`).
struct Net {
    name: &'static str,
    kwargs: Value,
    used: RefCell<BTreeSet<String>>,
    params: BTreeMap<String, Rc<Array>>,
}

impl Net {
    fn new(v: &Value, name: &'static str) -> Result<Net> {
        let state = network_state(v).context(name)?;
        let version = state.get("version").and_then(|v| v.as_int()).unwrap_or(0);
        ensure!(version >= 4, "{name}: TensorFlow network version {version}: too old (StyleGAN2 networks have 4)");
        let mut params = BTreeMap::new();
        collect(v, "", &mut params).context(name)?;
        let kwargs = state.get("static_kwargs").unwrap_or(Value::None);
        Ok(Net { name, kwargs, used: RefCell::new(BTreeSet::new()), params })
    }

    /// `static_kwargs[key]` as JSON, else `default` (a stored None stays null, as legacy.py reads it).
    fn kw(&self, key: &str, default: Json) -> Result<Json> {
        self.used.borrow_mut().insert(key.to_string());
        match self.kwargs.get(key) {
            Some(v) => to_json(&v).with_context(|| format!("{}: static kwarg {key}", self.name)),
            None => Ok(default),
        }
    }

    /// legacy.py refuses kwargs it does not know: they would change the network in ways it cannot express.
    fn check_unknown(&self, ignored: &[&str]) -> Result<()> {
        let used = self.used.borrow();
        if let Value::Dict(d) = &self.kwargs {
            for (k, _) in d.borrow().iter() {
                let k = k.as_str().unwrap_or("?");
                if !used.contains(k) && !ignored.contains(&k) {
                    bail!("{}: unknown TensorFlow kwarg '{k}'", self.name);
                }
            }
        }
        Ok(())
    }

    fn has(&self, name: &str) -> bool {
        self.params.contains_key(name)
    }

    fn t(&self, name: &str) -> Result<Tensor> {
        let a = self.params.get(name).with_context(|| format!("{}: no TensorFlow variable {name}", self.name))?;
        Ok(a.to_tensor().to_kind(Kind::Float))
    }

    /// Renames `<prefix>ToRGB_lod<N>/...` (or FromRGB) to `<prefix><r>x<r>/ToRGB/...`; true when any existed (the
    /// `orig` architecture).
    fn rename_lod(&mut self, prefix: &str, what: &str, res: i64) -> bool {
        let pat = format!("{prefix}{what}_lod");
        let mut found = false;
        let renamed: Vec<(String, Rc<Array>)> = self
            .params
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(&pat)?;
                let (lod, tail) = rest.split_once('/')?;
                let r = res >> lod.parse::<u32>().ok()?;
                Some((format!("{prefix}{r}x{r}/{what}/{tail}"), v.clone()))
            })
            .collect();
        for (k, v) in renamed {
            found = true;
            self.params.insert(k, v);
        }
        found
    }
}

fn network_state(v: &Value) -> Result<Value> {
    match v {
        Value::Object(o) if o.borrow().class == Global::Network => Ok(o.borrow().state.clone()),
        other => bail!("expected a TF network, found {}", other.kind()),
    }
}

/// Variables of a network and its components, recursively, as legacy.py's `_collect_tf_params`.
fn collect(v: &Value, prefix: &str, out: &mut BTreeMap<String, Rc<Array>>) -> Result<()> {
    // Official networks nest components two or three deep.
    ensure!(prefix.matches('/').count() <= 64, "components nested more than 64 deep");
    let state = network_state(v)?;
    for var in state.get("variables").and_then(|l| l.items()).unwrap_or_default() {
        let pair = var.items().filter(|p| p.len() == 2).context("a variable is not a (name, value) pair")?;
        let name = pair[0].as_str().context("a variable name is not a str")?;
        let a = as_array(&pair[1]).with_context(|| format!("variable {prefix}{name}"))?;
        out.insert(format!("{prefix}{name}"), a);
    }
    if let Some(Value::Dict(ref c)) = state.get("components") {
        for (k, comp) in c.borrow().iter() {
            let name = k.as_str().context("a component name is not a str")?;
            collect(comp, &format!("{prefix}{name}/"), out)?;
        }
    }
    Ok(())
}

fn int(v: &Json, what: &str) -> Result<i64> {
    v.as_i64().with_context(|| format!("{what} = {v}: expected an integer"))
}

/// The normalised 2-D FIR filter the official layers register as `resample_filter`.
fn filter(kernel: &Json) -> Result<Tensor> {
    let k: Vec<f32> = kernel
        .as_array()
        .context("resample_kernel is not a list")?
        .iter()
        .map(|x| x.as_f64().map(|x| x as f32).context("resample_kernel holds a non-number"))
        .collect::<Result<_>>()?;
    let k = Tensor::from_slice(&k);
    let f = k.outer(&k);
    Ok(&f / f.sum(Kind::Float))
}

/// Conv kernels `[kh, kw, in, out] -> [out, in, kh, kw]`, optionally flipped spatially first.
fn conv(w: Tensor, flip: bool) -> Tensor {
    let w = if flip { w.flip([0, 1]) } else { w };
    w.permute([3, 2, 0, 1]).contiguous()
}

fn dense(w: Tensor) -> Tensor {
    w.tr().contiguous()
}

/// G (or Gs) -> official state dict and constructor kwargs.
pub fn convert_generator(v: &Value, name: &'static str) -> Result<(StateDict, Json)> {
    let mut n = Net::new(v, name)?;
    let res = n.kw("resolution", json!(1024))?;
    let kernel = n.kw("resample_kernel", json!([1, 3, 3, 1]))?;
    let w_avg_beta = match n.kw("w_avg_beta", json!(0.995))? {
        Json::Null => json!(1),
        b => b,
    };
    let mut kwargs = json!({
        "z_dim": n.kw("latent_size", json!(512))?,
        "c_dim": n.kw("label_size", json!(0))?,
        "w_dim": n.kw("dlatent_size", json!(512))?,
        "img_resolution": res,
        "img_channels": n.kw("num_channels", json!(3))?,
        "mapping_kwargs": {
            "num_layers": n.kw("mapping_layers", json!(8))?,
            "embed_features": n.kw("label_fmaps", Json::Null)?,
            "layer_features": n.kw("mapping_fmaps", Json::Null)?,
            "activation": n.kw("mapping_nonlinearity", json!("lrelu"))?,
            "lr_multiplier": n.kw("mapping_lrmul", json!(0.01))?,
            "w_avg_beta": w_avg_beta,
        },
        "synthesis_kwargs": {
            "channel_base": int(&n.kw("fmap_base", json!(16384))?, "fmap_base")? * 2,
            "channel_max": n.kw("fmap_max", json!(512))?,
            "num_fp16_res": n.kw("num_fp16_res", json!(0))?,
            "conv_clamp": n.kw("conv_clamp", Json::Null)?,
            "architecture": n.kw("architecture", json!("skip"))?,
            "resample_filter": kernel,
            "use_noise": n.kw("use_noise", json!(true))?,
            "activation": n.kw("nonlinearity", json!("lrelu"))?,
        },
    });
    n.check_unknown(&["truncation_psi", "truncation_cutoff", "style_mixing_prob", "structure"])?;
    let res = int(&kwargs["img_resolution"], "resolution")?;
    ensure!(res >= 4 && (res as u64).is_power_of_two(), "{name}: resolution {res} is not a power of two >= 4");
    if n.rename_lod("synthesis/", "ToRGB", res) {
        kwargs["synthesis_kwargs"]["architecture"] = json!("orig");
    }
    let arch = kwargs["synthesis_kwargs"]["architecture"].as_str().unwrap_or("skip").to_string();
    let f = filter(&kwargs["synthesis_kwargs"]["resample_filter"])?;
    let mut out = StateDict::new();
    out.insert("mapping.w_avg".into(), n.t("dlatent_avg")?);
    if n.has("mapping/LabelEmbed/weight") {
        out.insert("mapping.embed.weight".into(), dense(n.t("mapping/LabelEmbed/weight")?));
        out.insert("mapping.embed.bias".into(), n.t("mapping/LabelEmbed/bias")?);
    }
    for i in 0..int(&kwargs["mapping_kwargs"]["num_layers"], "mapping_layers")? {
        out.insert(format!("mapping.fc{i}.weight"), dense(n.t(&format!("mapping/Dense{i}/weight"))?));
        out.insert(format!("mapping.fc{i}.bias"), n.t(&format!("mapping/Dense{i}/bias"))?);
    }
    let mut layer = |dst: String, src: String, noise: i64, flip: bool| -> Result<()> {
        out.insert(format!("{dst}.weight"), conv(n.t(&format!("{src}/weight"))?, flip));
        out.insert(format!("{dst}.bias"), n.t(&format!("{src}/bias"))?);
        out.insert(format!("{dst}.noise_strength"), n.t(&format!("{src}/noise_strength"))?.reshape([] as [i64; 0]));
        out.insert(format!("{dst}.noise_const"), n.t(&format!("synthesis/noise{noise}"))?.get(0).get(0));
        out.insert(format!("{dst}.affine.weight"), dense(n.t(&format!("{src}/mod_weight"))?));
        out.insert(format!("{dst}.affine.bias"), n.t(&format!("{src}/mod_bias"))? + 1.0);
        out.insert(format!("{dst}.resample_filter"), f.copy());
        Ok(())
    };
    let log2 = res.trailing_zeros() as i64;
    for rl in 2..=log2 {
        let r = 1i64 << rl;
        let (b, s) = (format!("synthesis.b{r}"), format!("synthesis/{r}x{r}"));
        if r == 4 {
            layer(format!("{b}.conv1"), format!("{s}/Conv"), 0, false)?;
        } else {
            layer(format!("{b}.conv0"), format!("{s}/Conv0_up"), rl * 2 - 5, true)?;
            layer(format!("{b}.conv1"), format!("{s}/Conv1"), rl * 2 - 4, false)?;
        }
    }
    for rl in 2..=log2 {
        let r = 1i64 << rl;
        let (b, s) = (format!("synthesis.b{r}"), format!("synthesis/{r}x{r}"));
        if r == 4 {
            out.insert(format!("{b}.const"), n.t(&format!("{s}/Const/const"))?.get(0));
        }
        if arch == "skip" || r == res {
            out.insert(format!("{b}.torgb.weight"), conv(n.t(&format!("{s}/ToRGB/weight"))?, false));
            out.insert(format!("{b}.torgb.bias"), n.t(&format!("{s}/ToRGB/bias"))?);
            out.insert(format!("{b}.torgb.affine.weight"), dense(n.t(&format!("{s}/ToRGB/mod_weight"))?));
            out.insert(format!("{b}.torgb.affine.bias"), n.t(&format!("{s}/ToRGB/mod_bias"))? + 1.0);
        }
        if arch == "resnet" && r > 4 {
            out.insert(format!("{b}.skip.weight"), conv(n.t(&format!("{s}/Skip/weight"))?, true));
            out.insert(format!("{b}.skip.resample_filter"), f.copy());
        }
        out.insert(format!("{b}.resample_filter"), f.copy());
    }
    Ok((out, kwargs))
}

/// D -> official state dict and constructor kwargs.
pub fn convert_discriminator(v: &Value) -> Result<(StateDict, Json)> {
    let mut n = Net::new(v, "D")?;
    let kernel = n.kw("resample_kernel", json!([1, 3, 3, 1]))?;
    let cmap = n.kw("mapping_fmaps", Json::Null)?;
    let act = n.kw("nonlinearity", json!("lrelu"))?;
    let mut kwargs = json!({
        "c_dim": n.kw("label_size", json!(0))?,
        "img_resolution": n.kw("resolution", json!(1024))?,
        "img_channels": n.kw("num_channels", json!(3))?,
        "architecture": n.kw("architecture", json!("resnet"))?,
        "channel_base": int(&n.kw("fmap_base", json!(16384))?, "fmap_base")? * 2,
        "channel_max": n.kw("fmap_max", json!(512))?,
        "num_fp16_res": n.kw("num_fp16_res", json!(0))?,
        "conv_clamp": n.kw("conv_clamp", Json::Null)?,
        "cmap_dim": cmap,
        "block_kwargs": {
            "activation": act,
            "resample_filter": kernel,
            "freeze_layers": n.kw("freeze_layers", json!(0))?,
        },
        "mapping_kwargs": {
            "num_layers": n.kw("mapping_layers", json!(0))?,
            "embed_features": cmap,
            "layer_features": cmap,
            "activation": act,
            "lr_multiplier": n.kw("mapping_lrmul", json!(0.1))?,
        },
        // The TF network's own default group size (D_stylegan2's signature) when the pickle does not set it;
        // legacy.py's None would mean the whole minibatch.
        "epilogue_kwargs": {
            "mbstd_group_size": n.kw("mbstd_group_size", json!(4))?,
            "mbstd_num_channels": n.kw("mbstd_num_features", json!(1))?,
            "activation": act,
        },
    });
    n.check_unknown(&["structure"])?;
    let res = int(&kwargs["img_resolution"], "resolution")?;
    ensure!(res >= 4 && (res as u64).is_power_of_two(), "D: resolution {res} is not a power of two >= 4");
    if n.rename_lod("", "FromRGB", res) {
        kwargs["architecture"] = json!("orig");
    }
    let f = filter(&kwargs["block_kwargs"]["resample_filter"])?;
    let mut out = StateDict::new();
    for rl in (3..=res.trailing_zeros() as i64).rev() {
        let r = 1i64 << rl;
        let s = format!("{r}x{r}");
        if n.has(&format!("{s}/FromRGB/weight")) {
            out.insert(format!("b{r}.fromrgb.weight"), conv(n.t(&format!("{s}/FromRGB/weight"))?, false));
            out.insert(format!("b{r}.fromrgb.bias"), n.t(&format!("{s}/FromRGB/bias"))?);
            out.insert(format!("b{r}.fromrgb.resample_filter"), f.copy());
        }
        for (i, src) in [(0, "Conv0"), (1, "Conv1_down")] {
            out.insert(format!("b{r}.conv{i}.weight"), conv(n.t(&format!("{s}/{src}/weight"))?, false));
            out.insert(format!("b{r}.conv{i}.bias"), n.t(&format!("{s}/{src}/bias"))?);
            out.insert(format!("b{r}.conv{i}.resample_filter"), f.copy());
        }
        if n.has(&format!("{s}/Skip/weight")) {
            out.insert(format!("b{r}.skip.weight"), conv(n.t(&format!("{s}/Skip/weight"))?, false));
            out.insert(format!("b{r}.skip.resample_filter"), f.copy());
        }
        out.insert(format!("b{r}.resample_filter"), f.copy());
    }
    if n.has("LabelEmbed/weight") {
        out.insert("mapping.embed.weight".into(), dense(n.t("LabelEmbed/weight")?));
        out.insert("mapping.embed.bias".into(), n.t("LabelEmbed/bias")?);
        let mut i = 0;
        while n.has(&format!("Mapping{i}/weight")) {
            out.insert(format!("mapping.fc{i}.weight"), dense(n.t(&format!("Mapping{i}/weight"))?));
            out.insert(format!("mapping.fc{i}.bias"), n.t(&format!("Mapping{i}/bias"))?);
            i += 1;
        }
    }
    out.insert("b4.conv.weight".into(), conv(n.t("4x4/Conv/weight")?, false));
    out.insert("b4.conv.bias".into(), n.t("4x4/Conv/bias")?);
    out.insert("b4.conv.resample_filter".into(), f.copy());
    out.insert("b4.fc.weight".into(), dense(n.t("4x4/Dense0/weight")?));
    out.insert("b4.fc.bias".into(), n.t("4x4/Dense0/bias")?);
    out.insert("b4.out.weight".into(), dense(n.t("Output/weight")?));
    out.insert("b4.out.bias".into(), n.t("Output/bias")?);
    Ok((out, kwargs))
}
