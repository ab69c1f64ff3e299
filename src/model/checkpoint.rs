//! sg2 checkpoints: one `.safetensors` file with the networks under prefixes (`G.`, `G_ema.`, `D.`), any extra
//! tensors (optimizer state), and string metadata including the full config, so a checkpoint alone can generate.

use super::Generator;
use crate::config::Config;
use anyhow::{bail, ensure, Context, Result};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

pub const FORMAT: &str = "sg2-checkpoint-1";
pub const KEY_FORMAT: &str = "sg2.format";
pub const KEY_CONFIG: &str = "sg2.config";
pub const KEY_VERSION: &str = "sg2.version";
/// SHA-256 of every tensor (name, dtype, shape, bytes, in name order), written with the file and checked on reading:
/// a truncated copy or flipped bytes are an error, not silently different weights or statistics.
pub const KEY_SHA256: &str = "sg2.sha256";

/// A loaded checkpoint: every tensor on the CPU, by full name.
pub struct Checkpoint {
    pub config: Config,
    pub metadata: BTreeMap<String, String>,
    pub tensors: BTreeMap<String, Tensor>,
}

fn dtype_of(kind: Kind) -> Result<Dtype> {
    Ok(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        other => bail!("cannot store tensors of kind {other:?}"),
    })
}

fn kind_of(dtype: Dtype) -> Result<Kind> {
    Ok(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        other => bail!("unsupported tensor dtype {other:?}"),
    })
}

fn tensor_bytes(t: &Tensor) -> Vec<u8> {
    let t = t.detach().to_device(Device::Cpu).contiguous();
    let numel = t.numel();
    let mut buf = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    t.copy_data_u8(&mut buf, numel);
    buf
}

/// The [`KEY_SHA256`] digest of named tensors.
fn digest<'a>(tensors: impl Iterator<Item = (&'a str, Dtype, &'a [usize], &'a [u8])>) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<_> = tensors.collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = Sha256::new();
    for (name, dtype, shape, bytes) in sorted {
        h.update(format!("{name}\0{dtype:?}\0{shape:?}\0{}\0", bytes.len()).as_bytes());
        h.update(bytes);
    }
    crate::data::shards::hex(&h.finalize())
}

/// Writes named tensors and metadata to a safetensors file atomically, with their [`KEY_SHA256`].
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)], metadata: &BTreeMap<String, String>) -> Result<()> {
    let mut owned = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        owned.push((name.clone(), dtype_of(t.kind()).with_context(|| name.clone())?, shape, tensor_bytes(t)));
    }
    let sha = digest(owned.iter().map(|(n, d, s, b)| (n.as_str(), *d, s.as_slice(), b.as_slice())));
    let views = owned
        .iter()
        .map(|(n, d, s, b)| Ok((n.clone(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut meta: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    meta.insert(KEY_SHA256.into(), sha);
    let bytes = safetensors::serialize(views, Some(meta))?;
    crate::util::write_bytes_atomic(path, &bytes)
}

fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    ensure!(!path.is_dir(), "{}: is a folder, not a checkpoint file", path.display());
    // A FIFO or device would block or never end; safetensors files are regular files.
    if let Ok(m) = std::fs::metadata(path) {
        ensure!(m.is_file(), "{}: not a regular file", path.display());
    }
    let file = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let len = file.metadata().with_context(|| format!("{}: cannot stat", path.display()))?.len();
    ensure!(len > 0, "{}: empty file (0 bytes), not a checkpoint", path.display());
    // SAFETY: the file is only read; a concurrent writer replaces it by rename, never in place.
    unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("{}: cannot map", path.display()))
}

/// The error for bytes that are not safetensors: a pickle or a `torch.save` file is pointed to `sg2 import`.
fn not_safetensors(path: &Path, bytes: &[u8], e: impl std::fmt::Display) -> anyhow::Error {
    if bytes.first() == Some(&0x80) || bytes.starts_with(b"PK\x03\x04") {
        anyhow::anyhow!(
            "{}: a Python pickle or torch.save file, not an sg2 checkpoint; convert it with `sg2 import`",
            path.display()
        )
    } else if let Some(why) = truncation(bytes) {
        anyhow::anyhow!("{}: truncated ({why})", path.display())
    } else {
        anyhow::anyhow!("{}: not a valid safetensors file ({e})", path.display())
    }
}

/// Whether safetensors bytes end before their header says they do (a copy or a write cut short): the header's
/// length, or its tensors' last data offset, beyond the file.
fn truncation(bytes: &[u8]) -> Option<String> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let len = bytes.len() as u64;
    // A header over 100 MB is no header (safetensors' own limit): not a truncation but other bytes.
    if n > 100_000_000 {
        return None;
    }
    if 8 + n > len {
        return Some(format!("{len} bytes, the header alone declares {}", 8 + n));
    }
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n as usize]).ok()?;
    let end = header.as_object()?.values().filter_map(|t| t.get("data_offsets")?.as_array()?.get(1)?.as_u64()).max()?;
    (8 + n + end > len).then(|| format!("{len} bytes, the tensors end at byte {}", 8 + n + end))
}

fn header_metadata(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, String>> {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| not_safetensors(path, bytes, e))?;
    Ok(header.metadata().clone().unwrap_or_default().into_iter().collect())
}

/// The metadata of a safetensors file, from its header alone (the tensor data is mapped, never read).
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    header_metadata(path, &map_file(path)?)
}

/// Reads every tensor (to CPU) and the metadata of a safetensors file.
pub fn read_safetensors(path: &Path) -> Result<(BTreeMap<String, Tensor>, BTreeMap<String, String>)> {
    let mmap = map_file(path)?;
    let st = safetensors::SafeTensors::deserialize(&mmap).map_err(|e| not_safetensors(path, &mmap, e))?;
    let metadata = header_metadata(path, &mmap)?;
    let views = st.tensors();
    if let Some(want) = metadata.get(KEY_SHA256) {
        let got = digest(views.iter().map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())));
        ensure!(
            &got == want,
            "{}: damaged: the tensors do not match the checksum written with them (a truncated or altered copy)",
            path.display()
        );
    }
    let mut tensors = BTreeMap::new();
    for (name, view) in views {
        let kind = kind_of(view.dtype()).with_context(|| format!("{}: tensor {name}", path.display()))?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        tensors.insert(name, Tensor::from_data_size(view.data(), &shape, kind));
    }
    Ok((tensors, metadata))
}

/// Saves networks (each VarStore under its prefix), extra tensors and metadata, atomically.
pub fn save(
    path: &Path,
    config: &Config,
    nets: &[(&str, &VarStore)],
    extra: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = vec![];
    for (prefix, vs) in nets {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        tensors.extend(vars.into_iter().map(|(n, t)| (format!("{prefix}.{n}"), t)));
    }
    tensors.extend(extra.iter().map(|(n, t)| (n.clone(), t.shallow_clone())));
    let mut meta = metadata.clone();
    meta.insert(KEY_FORMAT.into(), FORMAT.into());
    meta.insert(KEY_CONFIG.into(), config.to_toml());
    meta.insert(KEY_VERSION.into(), env!("CARGO_PKG_VERSION").into());
    write_safetensors(path, &tensors, &meta)
}

/// Loads an sg2 checkpoint; a file of another kind gets an error saying what it is.
pub fn load(path: &Path) -> Result<Checkpoint> {
    if !path.exists() {
        bail!("{}: no such checkpoint", path.display());
    }
    let (tensors, metadata) = read_safetensors(path)?;
    match metadata.get(KEY_FORMAT).map(String::as_str) {
        Some(FORMAT) => {}
        Some(other) => bail!("{}: checkpoint format '{other}', this sg2 reads '{FORMAT}'", path.display()),
        None => bail!(
            "{}: not an sg2 checkpoint (no '{KEY_FORMAT}' metadata); official state dicts are converted with `sg2 import`",
            path.display()
        ),
    }
    let text = metadata.get(KEY_CONFIG).with_context(|| format!("{}: checkpoint has no config", path.display()))?;
    let config = crate::config::parse(text, &format!("{} (stored config)", path.display()), &[])?;
    Ok(Checkpoint { config, metadata, tensors })
}

impl Checkpoint {
    pub fn has(&self, prefix: &str) -> bool {
        let p = format!("{prefix}.");
        self.tensors.keys().any(|k| k.starts_with(&p))
    }

    /// The generator used for inference: G_ema, else G.
    pub fn generator_prefix(&self) -> Option<&'static str> {
        ["G_ema", "G"].into_iter().find(|p| self.has(p))
    }

    /// Checks what generating and resuming will need: a generator, and every network present loads into the
    /// networks its config describes (names and shapes).
    pub fn verify(&self) -> Result<()> {
        ensure!(self.generator_prefix().is_some(), "checkpoint holds no generator");
        for prefix in ["G", "G_ema"].into_iter().filter(|p| self.has(p)) {
            let mut vs = VarStore::new(Device::Cpu);
            let _g = Generator::new(&vs.root(), &self.config.model);
            self.load_into(prefix, &mut vs)?;
        }
        if self.has("D") {
            let mut vs = VarStore::new(Device::Cpu);
            let _d = super::Discriminator::new(&vs.root(), &self.config.model);
            self.load_into("D", &mut vs)?;
        }
        Ok(())
    }

    /// Copies the tensors under `prefix` into `vs`, checking that names and shapes match exactly.
    pub fn load_into(&self, prefix: &str, vs: &mut VarStore) -> Result<()> {
        copy_into(&self.tensors, &format!("{prefix}."), vs, prefix)
    }
}

/// Copies `tensors[prefix + name]` into every variable of `vs`; every mismatch is reported in one error.
pub fn copy_into(tensors: &BTreeMap<String, Tensor>, prefix: &str, vs: &mut VarStore, what: &str) -> Result<()> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let mut problems = vec![];
    for (name, var) in &vars {
        match tensors.get(&format!("{prefix}{name}")) {
            None => problems.push(format!("missing {name}")),
            Some(t) if t.size() != var.size() => {
                problems.push(format!("{name} has shape {:?}, expected {:?}", t.size(), var.size()))
            }
            Some(_) => {}
        }
    }
    for key in tensors.keys() {
        if let Some(name) = key.strip_prefix(prefix) {
            if !vars.contains_key(name) {
                problems.push(format!("unexpected {name}"));
            }
        }
    }
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(8);
        let more = if n > 8 { format!(" (and {} more)", n - 8) } else { String::new() };
        bail!("{what}: {}{more}", problems.join("; "));
    }
    tch::no_grad(|| {
        for (name, var) in &vars {
            let src = &tensors[&format!("{prefix}{name}")];
            var.shallow_clone().copy_(&src.to_kind(var.kind()).to_device(var.device()));
        }
    });
    Ok(())
}

/// Refuses weights holding NaN or infinity (a diverged network), naming the first such tensor under `prefix`.
pub fn ensure_finite(vs: &VarStore, prefix: &str) -> Result<()> {
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    if let Some((name, _)) = vars.iter().find(|(_, t)| !crate::util::all_finite(t)) {
        bail!("{prefix}.{name} holds NaN or infinite values (the network diverged)");
    }
    Ok(())
}

/// The generator for inference: G_ema (or G when the file has no G_ema), on `device`, with the checkpoint's config.
pub fn load_generator(path: &Path, device: Device) -> Result<(Config, VarStore, Generator)> {
    let ckpt = load(path)?;
    let Some(prefix) = ckpt.generator_prefix() else {
        bail!("{}: checkpoint holds no generator", path.display());
    };
    let mut vs = VarStore::new(device);
    let g = Generator::new(&vs.root(), &ckpt.config.model);
    ckpt.load_into(prefix, &mut vs).with_context(|| format!("{}", path.display()))?;
    // A diverged network would give black or constant images without a word.
    ensure_finite(&vs, prefix).with_context(|| path.display().to_string())?;
    vs.freeze();
    Ok((ckpt.config, vs, g))
}
