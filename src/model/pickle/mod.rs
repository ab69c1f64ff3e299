//! Official network pickles, read without Python: NVlabs/stylegan2 TensorFlow pickles (`tf`) and
//! stylegan2-ada-pytorch snapshots (`ada`), both to official-named state dicts and constructor kwargs.

pub mod ada;
pub mod array;
pub mod globals;
pub mod reader;
pub mod tf;
mod torch_legacy;
pub mod value;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value as Json;
use std::path::Path;
pub use tf::StateDict;
use value::Value;

/// The networks of an official pickle, under official names.
pub struct Official {
    /// "TensorFlow" or "stylegan2-ada-pytorch".
    pub kind: &'static str,
    /// The generator for inference: `Gs` (TF) or `G_ema` (ada).
    pub g_ema: StateDict,
    /// The training generator, when the pickle has one.
    pub g: Option<StateDict>,
    pub d: Option<StateDict>,
    /// `{"G": {...}, "D": {...}}` in stylegan2-ada-pytorch's constructor form.
    pub kwargs: Json,
    /// `training_set_kwargs.xflip` of an ada snapshot.
    pub mirror: Option<bool>,
}

/// A pickled value as JSON (kwargs): numbers, strings, lists, tuples, dicts with str keys, numpy scalars.
pub fn to_json(v: &Value) -> Result<Json> {
    to_json_at(v, 0)
}

fn to_json_at(v: &Value, depth: usize) -> Result<Json> {
    // Kwargs nest a few levels; a deeper value would only exhaust the stack.
    ensure!(depth <= 64, "values nested more than 64 deep where plain kwargs were expected");
    let to_json = |x: &Value| to_json_at(x, depth + 1);
    Ok(match v {
        Value::None => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => Json::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Json::Null, Json::Number),
        Value::Str(_) | Value::Bytes(_) => Json::String(v.as_str().context("bytes that are not text")?.to_string()),
        Value::Tuple(_) | Value::List(_) | Value::Set(_) => {
            Json::Array(v.items().unwrap_or_default().iter().map(&to_json).collect::<Result<_>>()?)
        }
        Value::Dict(d) => {
            let mut m = serde_json::Map::new();
            for (k, x) in d.borrow().iter() {
                m.insert(k.as_str().context("a dict key that is not a str")?.to_string(), to_json(x)?);
            }
            Json::Object(m)
        }
        Value::Array(a) if a.shape.is_empty() => {
            let x = a.scalar()?;
            if x.fract() == 0.0 && !matches!(a.elem, array::Elem::F16 | array::Elem::F32 | array::Elem::F64) {
                Json::from(x as i64)
            } else {
                serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number)
            }
        }
        other => bail!("{} where a plain value was expected", other.kind()),
    })
}

/// The first bytes of a file, for "not a pickle" messages.
fn head(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "an empty file".into();
    }
    let n = bytes.len().min(8);
    let hex: Vec<String> = bytes[..n].iter().map(|b| format!("{b:02x}")).collect();
    let text: String = bytes[..n].iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '.' }).collect();
    let what = match bytes {
        [b'P', b'K', 3, 4, ..] => ": a zip archive (torch.save or TorchScript files are not network pickles)",
        [0x93, b'N', b'U', b'M', b'P', b'Y', ..] => ": a .npy file",
        _ => "",
    };
    format!("starts with {} \"{text}\"{what}", hex.join(" "))
}

/// Reads an official network pickle from bytes.
pub fn parse(bytes: &[u8]) -> Result<Official> {
    let top = match reader::load(bytes, false) {
        Ok((v, _)) => v,
        // Protocol 2+ pickles start with PROTO; anything else that does not parse is not a pickle at all.
        Err(e) if bytes.first() != Some(&0x80) => bail!("not a pickle ({}; {e})", head(bytes)),
        Err(e) => return Err(e),
    };
    if tf::is_tf(&top) {
        let items = top.items().unwrap_or_default();
        let (g, _) = tf::convert_generator(&items[0], "G")?;
        let (d, d_kwargs) = tf::convert_discriminator(&items[1])?;
        let (gs, gs_kwargs) = tf::convert_generator(&items[2], "Gs")?;
        let kwargs = serde_json::json!({ "G": gs_kwargs, "D": d_kwargs });
        return Ok(Official { kind: "TensorFlow", g_ema: gs, g: Some(g), d: Some(d), kwargs, mirror: None });
    }
    if ada::is_ada(&top) {
        let n = ada::convert(&top)?;
        return Ok(Official {
            kind: "stylegan2-ada-pytorch",
            g_ema: n.g_ema,
            g: n.g,
            d: n.d,
            kwargs: n.kwargs,
            mirror: n.mirror,
        });
    }
    bail!(
        "not a StyleGAN2 pickle: {} (expected a TensorFlow (G, D, Gs) tuple or a stylegan2-ada-pytorch dict with \
         G_ema)",
        top.describe()
    )
}

/// Reads an official network pickle; every error names the file.
pub fn read(path: &Path) -> Result<Official> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    parse(&bytes).with_context(|| path.display().to_string())
}
