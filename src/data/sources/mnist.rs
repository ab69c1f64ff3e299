//! MNIST and Fashion-MNIST: the training split's IDX files (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! gzipped or raw), padded from 28x28 to 32x32 with 2 black pixels on each side as the official tool does.

use super::{Item, Payload, Source};
use crate::image_io::ImageU8;
use anyhow::{bail, ensure, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

pub struct Mnist {
    dir: PathBuf,
    images: Vec<u8>,
    labels: Vec<u8>,
    rows: usize,
    cols: usize,
}

/// Finds `name` or `name.gz` in `dir` and returns its (decompressed) bytes.
fn read_idx_file(dir: &Path, name: &str) -> Result<(PathBuf, Vec<u8>)> {
    for (file, gz) in [(name.to_string(), false), (format!("{name}.gz"), true)] {
        let p = dir.join(&file);
        if !p.exists() {
            continue;
        }
        let raw = std::fs::read(&p).with_context(|| format!("{}: cannot read", p.display()))?;
        let bytes = if gz || raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = vec![];
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .with_context(|| format!("{}: corrupt or truncated gzip", p.display()))?;
            out
        } else {
            raw
        };
        return Ok((p, bytes));
    }
    bail!("{}: no {name} or {name}.gz (expected MNIST IDX files)", dir.display())
}

/// Parses an IDX header of unsigned bytes with `ndim` dimensions; returns the dims and the payload.
pub fn parse_idx(path: &Path, bytes: &[u8], ndim: u8) -> Result<(Vec<usize>, usize)> {
    ensure!(bytes.len() >= 4 && bytes[0] == 0 && bytes[1] == 0, "{}: not an IDX file", path.display());
    ensure!(bytes[2] == 0x08, "{}: IDX element type {:#04x}, expected unsigned bytes (0x08)", path.display(), bytes[2]);
    ensure!(bytes[3] == ndim, "{}: {} dimensions, expected {ndim}", path.display(), bytes[3]);
    let head = 4 + 4 * ndim as usize;
    ensure!(bytes.len() >= head, "{}: truncated header", path.display());
    let dims: Vec<usize> = (0..ndim as usize)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n: usize = dims.iter().product();
    let got = bytes.len() - head;
    let why = if got < n { "truncated" } else { "bytes after the data: not this header's file" };
    ensure!(got == n, "{}: {got} data bytes, header says {n} ({why})", path.display());
    Ok((dims, head))
}

impl Mnist {
    pub fn open(dir: &Path) -> Result<Mnist> {
        ensure!(dir.is_dir(), "{}: no such folder (expected the folder holding MNIST IDX files)", dir.display());
        let (ip, ib) = read_idx_file(dir, "train-images-idx3-ubyte")?;
        let (lp, lb) = read_idx_file(dir, "train-labels-idx1-ubyte")?;
        let (idims, ihead) = parse_idx(&ip, &ib, 3)?;
        let (ldims, lhead) = parse_idx(&lp, &lb, 1)?;
        ensure!(
            idims[0] == ldims[0],
            "{}: {} images but {} labels in {}",
            ip.display(),
            idims[0],
            ldims[0],
            lp.display()
        );
        // The official tool asserts 28x28 and pads to 32x32 (the sizes MNIST and Fashion-MNIST have).
        ensure!(
            idims[1] == 28 && idims[2] == 28,
            "{}: images of {}x{}, expected 28x28 (MNIST / Fashion-MNIST); use create_from_images for other sizes",
            ip.display(),
            idims[2],
            idims[1]
        );
        let labels = lb[lhead..].to_vec();
        ensure!(labels.iter().all(|&l| l < 10), "{}: a label is not 0..9", lp.display());
        Ok(Mnist { dir: dir.to_path_buf(), images: ib[ihead..].to_vec(), labels, rows: idims[1], cols: idims[2] })
    }
}

impl Source for Mnist {
    fn len(&self) -> u64 {
        self.labels.len() as u64
    }

    fn get(&mut self, index: u64) -> Result<Item> {
        let i = index as usize;
        let (r, c) = (self.rows, self.cols);
        let (h, w) = (r + 4, c + 4);
        let mut data = vec![0u8; h * w];
        let src = &self.images[i * r * c..(i + 1) * r * c];
        for y in 0..r {
            data[(y + 2) * w + 2..(y + 2) * w + 2 + c].copy_from_slice(&src[y * c..(y + 1) * c]);
        }
        Ok(Item {
            key: format!("train[{i}]"),
            payload: Payload::Raw(ImageU8::new(w, h, 1, data)),
            label: Some(self.labels[i] as u32),
        })
    }

    fn num_classes(&self) -> u32 {
        10
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "mnist", "path": self.dir.display().to_string() })
    }
}
