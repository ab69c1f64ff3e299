//! stylegan2-ada-pytorch snapshot pickles: a dict with `G`, `D`, `G_ema`, `augment_pipe` and
//! `training_set_kwargs`. Each network is a persistent module (`torch_utils.persistence`): its pickled state is the
//! module's `__dict__`, whose `_parameters`, `_buffers` and `_modules` give the official `state_dict()` and whose
//! `_init_kwargs` are the constructor kwargs. The pickled source code is never looked at.

use super::globals::{as_array, Global};
use super::tf::StateDict;
use super::to_json;
use super::value::Value;
use anyhow::{bail, Context, Result};
use serde_json::Value as Json;
use std::collections::BTreeSet;

fn is_module(v: &Value) -> bool {
    v.object_class() == Some(Global::Persistent)
}

/// Whether `v` is an ada snapshot: a dict whose `G_ema` (or `G`) is a persistent module.
pub fn is_ada(v: &Value) -> bool {
    ["G_ema", "G"].iter().any(|k| v.get(k).is_some_and(|m| is_module(&m)))
}

fn module_state(v: &Value) -> Result<Value> {
    match v {
        Value::Object(o) if o.borrow().class == Global::Persistent => Ok(o.borrow().state.clone()),
        other => bail!("expected a persistent module, found {}", other.kind()),
    }
}

/// Entries of a module's `_parameters` / `_buffers` / `_modules` dict (None entries skipped, as `state_dict()`).
fn entries(state: &Value, group: &str) -> Result<Vec<(String, Value)>> {
    let mut out = vec![];
    if let Some(Value::Dict(ref d)) = state.get(group) {
        for (k, v) in d.borrow().iter() {
            let name = k.as_str().with_context(|| format!("a {group} name is not a str"))?;
            if !matches!(v, Value::None) {
                out.push((name.to_string(), v.clone()));
            }
        }
    }
    Ok(out)
}

/// The module's parameters and persistent buffers, recursively, under official names.
fn state_dict(v: &Value, prefix: &str, out: &mut StateDict) -> Result<()> {
    let state = module_state(v)?;
    let non_persistent: BTreeSet<String> = state
        .get("_non_persistent_buffers_set")
        .and_then(|s| s.items())
        .unwrap_or_default()
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    for group in ["_parameters", "_buffers"] {
        for (name, t) in entries(&state, group)? {
            if group == "_buffers" && non_persistent.contains(&name) {
                continue;
            }
            let full = format!("{prefix}{name}");
            let a = as_array(&t).with_context(|| full.clone())?;
            out.insert(full, a.to_tensor());
        }
    }
    for (name, child) in entries(&state, "_modules")? {
        state_dict(&child, &format!("{prefix}{name}."), out).with_context(|| format!("{prefix}{name}"))?;
    }
    Ok(())
}

fn init_kwargs(v: &Value) -> Result<Json> {
    let kw = module_state(v)?.get("_init_kwargs").context("the module has no _init_kwargs")?;
    to_json(&kw).context("_init_kwargs")
}

pub struct Networks {
    pub g_ema: StateDict,
    pub g: Option<StateDict>,
    pub d: Option<StateDict>,
    pub kwargs: Json,
    pub mirror: Option<bool>,
}

fn net(top: &Value, key: &str) -> Result<Option<Value>> {
    match top.get(key) {
        None | Some(Value::None) => Ok(None),
        Some(m) if is_module(&m) => Ok(Some(m)),
        Some(other) => bail!("'{key}' is {}, not a network", other.kind()),
    }
}

pub fn convert(top: &Value) -> Result<Networks> {
    let g = net(top, "G")?;
    let g_ema = net(top, "G_ema")?.or_else(|| g.clone()).context("no 'G_ema' or 'G' network")?;
    let d = net(top, "D")?;
    let mut g_ema_state = StateDict::new();
    // StyleGAN3 snapshots have the same layout; their synthesis layers are named L0_36_512, ... instead of b4, ...
    let synthesis = module_state(&g_ema)?.get("_modules").and_then(|m| m.get("synthesis"));
    if let Some(layers) = synthesis.and_then(|s| module_state(&s).ok()).and_then(|s| s.get("_modules")) {
        let names = layers.keys();
        if !names.is_empty() && names.iter().all(|n| n.starts_with("'L") || n.starts_with("'input")) {
            bail!("a StyleGAN3 network (synthesis layers {}, ...): sg2 implements StyleGAN2", names[0]);
        }
    }
    state_dict(&g_ema, "", &mut g_ema_state).context("G_ema")?;
    let g_state = match &g {
        Some(g) => {
            let mut s = StateDict::new();
            state_dict(g, "", &mut s).context("G")?;
            Some(s)
        }
        None => None,
    };
    let mut kwargs = serde_json::json!({ "G": init_kwargs(&g_ema).context("G_ema")? });
    let d_state = match &d {
        Some(d) => {
            let mut s = StateDict::new();
            state_dict(d, "", &mut s).context("D")?;
            kwargs["D"] = init_kwargs(d).context("D")?;
            Some(s)
        }
        None => None,
    };
    let mirror = match top.get("training_set_kwargs").and_then(|t| t.get("xflip")) {
        Some(Value::Bool(b)) => Some(b),
        Some(Value::Int(i)) => Some(i != 0),
        _ => None,
    };
    Ok(Networks { g_ema: g_ema_state, g: g_state, d: d_state, kwargs, mirror })
}
