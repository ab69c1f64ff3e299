//! CIFAR-10, python version: `cifar-10-python.tar.gz` or its extracted folder. The training batches
//! `data_batch_1..5` in order (as the official tool), images 3x32x32, labels 0..9.

use super::pickle::{load, ndarray_u8, Val};
use super::{Item, Payload, Source};
use crate::data::transform::from_chw;
use anyhow::{ensure, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

pub struct Cifar10 {
    path: PathBuf,
    /// Every image, CHW, 3072 bytes each.
    data: Vec<u8>,
    labels: Vec<u8>,
}

fn batch_number(name: &str) -> Option<u32> {
    let file = name.rsplit('/').next()?;
    file.strip_prefix("data_batch_")?.parse().ok()
}

/// Appends one pickled batch to `data` and `labels`.
fn read_batch(what: &str, bytes: &[u8], data: &mut Vec<u8>, labels: &mut Vec<u8>) -> Result<()> {
    let v = load(bytes).with_context(|| format!("{what}: not a CIFAR-10 python batch"))?;
    let arr = v.get("data").with_context(|| format!("{what}: no 'data' in the batch"))?;
    let (shape, px) = ndarray_u8(arr).with_context(|| format!("{what}: 'data'"))?;
    ensure!(shape.len() == 2 && shape[1] == 3072, "{what}: data shape {shape:?}, expected [N, 3072]");
    ensure!(shape[0] > 0, "{what}: an empty batch (0 images; CIFAR-10 batches hold 10000)");
    let Some(Val::List(l)) = v.get("labels") else { anyhow::bail!("{what}: no 'labels' list in the batch") };
    ensure!(l.len() == shape[0], "{what}: {} labels for {} images", l.len(), shape[0]);
    for x in l {
        let x = x.as_int().filter(|x| (0..10).contains(x)).with_context(|| format!("{what}: a label is not 0..9"))?;
        labels.push(x as u8);
    }
    data.extend_from_slice(px);
    Ok(())
}

impl Cifar10 {
    pub fn open(path: &Path) -> Result<Cifar10> {
        ensure!(path.exists(), "{}: no such file or folder", path.display());
        let mut batches: Vec<(u32, String, Vec<u8>)> = vec![];
        if path.is_dir() {
            let dir = if path.join("cifar-10-batches-py").is_dir() {
                path.join("cifar-10-batches-py")
            } else {
                path.to_path_buf()
            };
            for e in std::fs::read_dir(&dir).with_context(|| format!("{}: cannot list", dir.display()))? {
                let p = e?.path();
                if let Some(k) = batch_number(&p.file_name().unwrap_or_default().to_string_lossy()) {
                    let b = std::fs::read(&p).with_context(|| format!("{}: cannot read", p.display()))?;
                    batches.push((k, p.display().to_string(), b));
                }
            }
        } else {
            let f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
            let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
            let ctx = || format!("{}: not a gzipped tar, or truncated", path.display());
            for e in ar.entries().with_context(ctx)? {
                let mut e = e.with_context(ctx)?;
                let name = e.path().with_context(ctx)?.to_string_lossy().into_owned();
                if let Some(k) = batch_number(&name) {
                    let mut b = vec![];
                    e.read_to_end(&mut b).with_context(ctx)?;
                    batches.push((k, format!("{}:{name}", path.display()), b));
                }
            }
        }
        ensure!(!batches.is_empty(), "{}: no data_batch_N files (expected CIFAR-10 python batches)", path.display());
        batches.sort_by_key(|b| b.0);
        // The batches must be data_batch_1..N, each once: a gap or a repeat is a damaged copy.
        for (i, (k, what, _)) in batches.iter().enumerate() {
            ensure!(
                *k == i as u32 + 1,
                "{}: data_batch_{} is missing or repeated (found {what} where data_batch_{} belongs)",
                path.display(),
                i + 1,
                i + 1
            );
        }
        if batches.len() < 5 {
            let found = match batches.len() {
                1 => "data_batch_1".to_string(),
                n => format!("data_batch_1..{n}"),
            };
            eprintln!("warning: {}: only {found} (CIFAR-10 has 5 training batches)", path.display());
        }
        let (mut data, mut labels) = (vec![], vec![]);
        for (_, what, bytes) in &batches {
            read_batch(what, bytes, &mut data, &mut labels)?;
        }
        Ok(Cifar10 { path: path.to_path_buf(), data, labels })
    }
}

impl Source for Cifar10 {
    fn len(&self) -> u64 {
        self.labels.len() as u64
    }

    fn get(&mut self, index: u64) -> Result<Item> {
        let i = index as usize;
        let img = from_chw(&self.data[i * 3072..(i + 1) * 3072], 3, 32, 32);
        Ok(Item { key: format!("train[{i}]"), payload: Payload::Raw(img), label: Some(self.labels[i] as u32) })
    }

    fn num_classes(&self) -> u32 {
        10
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "cifar10", "path": self.path.display().to_string() })
    }
}
