//! Per-layer tables like the official module summary: each layer's parameters, buffers, output shape and dtype.

use crate::config::ModelConfig;
use std::collections::BTreeMap;
use tch::nn::VarStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    G,
    D,
}

/// One row: a module that owns variables.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: String,
    pub params: i64,
    pub buffers: i64,
    pub output: String,
    pub dtype: &'static str,
}

fn res_of(block: &str) -> Option<i64> {
    block.strip_prefix('b').and_then(|r| r.parse().ok())
}

/// Output shape of a module by its official name ("N" is the batch dimension).
fn output_shape(cfg: &ModelConfig, net: Net, module: &str) -> String {
    let ch = |r: i64| cfg.channels_at(r as u32);
    let parts: Vec<&str> = module.split('.').collect();
    let img_c = cfg.channels as i64;
    let cmap = if cfg.c_dim > 0 { ch(4) } else { 0 };
    match (net, parts.as_slice()) {
        (Net::G, ["mapping"]) => format!("[N, {}, {}]", cfg.num_ws(), cfg.w_dim),
        (Net::G, ["mapping", ..]) => format!("[N, {}]", cfg.w_dim),
        (Net::G, ["synthesis", b, layer, "affine"]) => {
            let r = res_of(b).unwrap_or(0);
            format!("[N, {}]", if *layer == "conv0" { ch(r / 2) } else { ch(r) })
        }
        (Net::G, ["synthesis", b, layer]) => {
            let r = res_of(b).unwrap_or(0);
            match *layer {
                "torgb" => format!("[N, {img_c}, {r}, {r}]"),
                _ => format!("[N, {}, {r}, {r}]", ch(r)),
            }
        }
        (Net::G, ["synthesis", b]) => {
            let r = res_of(b).unwrap_or(0);
            format!("[N, {}, {r}, {r}] + img [N, {img_c}, {r}, {r}]", ch(r))
        }
        (Net::D, ["mapping", ..]) => format!("[N, {cmap}]"),
        (Net::D, ["b4", "conv"]) => format!("[N, {}, 4, 4]", ch(4)),
        (Net::D, ["b4", "fc"]) => format!("[N, {}]", ch(4)),
        (Net::D, ["b4", "out"]) => format!("[N, {}]", if cmap > 0 { cmap } else { 1 }),
        (Net::D, ["b4", "fromrgb"]) => format!("[N, {}, 4, 4]", ch(4)),
        (Net::D, [b, layer]) => {
            let r = res_of(b).unwrap_or(0);
            match *layer {
                "conv1" | "skip" => format!("[N, {}, {}, {}]", ch(r / 2), r / 2, r / 2),
                _ => format!("[N, {}, {r}, {r}]", ch(r)),
            }
        }
        (Net::D, [b]) => {
            let r = res_of(b).unwrap_or(0);
            format!("[N, {}, {}, {}]", ch(r / 2), r / 2, r / 2)
        }
        _ => "-".into(),
    }
}

/// Whether a module runs in fp16 on CUDA (the top `num_fp16_res` resolutions, not below 8x8).
fn fp16(cfg: &ModelConfig, module: &str, cuda: bool) -> bool {
    if !cuda || cfg.num_fp16_res == 0 {
        return false;
    }
    let log2 = cfg.resolution_log2() as i64;
    let fp16_res = (1i64 << (log2 + 1 - cfg.num_fp16_res as i64)).max(8);
    module.split('.').filter_map(res_of).any(|r| r >= fp16_res && !module.starts_with("b4"))
}

/// Rows in forward order (mapping, then blocks by resolution: ascending for G, descending for D).
pub fn rows(cfg: &ModelConfig, net: Net, vs: &VarStore, cuda: bool) -> Vec<Row> {
    let mut by_module: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (name, t) in vs.variables() {
        let module = name.rsplit_once('.').map(|(m, _)| m.to_string()).unwrap_or_default();
        let e = by_module.entry(module).or_default();
        if t.requires_grad() {
            e.0 += t.numel() as i64;
        } else {
            e.1 += t.numel() as i64;
        }
    }
    let order = |m: &str| -> (i64, i64, String) {
        let parts: Vec<&str> = m.split('.').collect();
        let block = parts.iter().find_map(|p| res_of(p));
        let stage = match (net, parts[0]) {
            (Net::G, "mapping") => 0,
            (Net::D, "mapping") => 2,
            (Net::D, "b4") => 3,
            _ => 1,
        };
        let r = block.unwrap_or(0);
        let key = if net == Net::D { -r } else { r };
        // A block's own row (const, filter) comes after its layers.
        let own = if parts.len() <= 2 && parts.last().is_some_and(|p| res_of(p).is_some()) { "~" } else { "" };
        (stage, key, format!("{own}{m}"))
    };
    let mut modules: Vec<_> = by_module.into_iter().collect();
    modules.sort_by_key(|(m, _)| order(m));
    modules
        .into_iter()
        .map(|(m, (params, buffers))| Row {
            output: output_shape(cfg, net, &m),
            dtype: if fp16(cfg, &m, cuda) { "float16" } else { "float32" },
            name: m,
            params,
            buffers,
        })
        .collect()
}

/// The printed table with totals.
pub fn table(title: &str, rows: &[Row]) -> String {
    let w = rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(title.len()).max(6);
    let mut s =
        format!("{:<w$}  {:>12}  {:>9}  {:<34}  {}\n", title, "Parameters", "Buffers", "Output shape", "Datatype");
    s.push_str(&format!("{:-<w$}  {:->12}  {:->9}  {:-<34}  {:-<8}\n", "", "", "", "", ""));
    for r in rows {
        s.push_str(&format!("{:<w$}  {:>12}  {:>9}  {:<34}  {}\n", r.name, r.params, r.buffers, r.output, r.dtype));
    }
    let (p, b): (i64, i64) = rows.iter().fold((0, 0), |(p, b), r| (p + r.params, b + r.buffers));
    s.push_str(&format!("{:-<w$}  {:->12}  {:->9}  {:-<34}  {:-<8}\n", "", "", "", "", ""));
    s.push_str(&format!("{:<w$}  {:>12}  {:>9}\n", "Total", p, b));
    s
}
