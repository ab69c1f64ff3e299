//! `sg2 bench dataset` and `sg2 bench loader`: throughput on synthetic data made on the spot.

use super::create::{create, CreateOptions};
use super::loader::{Loader, LoaderOptions};
use super::shards::{Dataset, ShardWriter};
use super::sources::lsun::Lmdb;
use super::transform::levels_of_detail;
use crate::image_io::ImageU8;
use crate::rng::splitmix64;
use anyhow::{Context, Result};
use image::ImageEncoder;
use rayon::prelude::*;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// A scratch folder removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Result<Scratch> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
        let p = std::env::temp_dir().join(format!("sg2-bench-{what}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("{}: cannot create", p.display()))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A photo-like picture: smooth colour fields, edges and mild noise, so it compresses like a photograph.
fn synthetic_photo(w: usize, h: usize, seed: u64) -> ImageU8 {
    let mut s = seed;
    let mut rnd = || splitmix64(&mut s);
    let (cx, cy, r) = ((rnd() % w as u64) as f32, (rnd() % h as u64) as f32, (rnd() % 100 + 40) as f32);
    let base = [(rnd() % 200) as f32, (rnd() % 200) as f32, (rnd() % 200) as f32];
    let mut data = Vec::with_capacity(w * h * 3);
    let mut noise = rnd();
    for y in 0..h {
        for x in 0..w {
            let inside = ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() < r;
            noise = noise.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let n = ((noise >> 60) as f32) - 8.0;
            for (k, b) in base.iter().enumerate() {
                let grad = (x as f32 / w as f32) * 40.0 + (y as f32 / h as f32) * 30.0 * (k as f32 - 1.0);
                let v = b + grad + if inside { 50.0 } else { 0.0 } + n;
                data.push(v.clamp(0.0, 255.0) as u8);
            }
        }
    }
    ImageU8::new(w, h, 3, data)
}

/// Makes an LSUN-style LMDB of `n` WebP images with a short side of 256 and a long side of 256..400.
fn synthetic_lsun(dir: &std::path::Path, n: usize) -> Result<u64> {
    let values: Vec<Vec<u8>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut s = i as u64 * 7 + 1;
            let long = 256 + (splitmix64(&mut s) % 145) as usize;
            let (w, h) = if i % 3 == 0 { (256, long) } else { (long, 256) };
            let p = synthetic_photo(w, h, i as u64);
            let mut out = vec![];
            image::codecs::webp::WebPEncoder::new_lossless(&mut out)
                .write_image(&p.data, w as u32, h as u32, image::ExtendedColorType::Rgb8)
                .map(|_| out)
                .map_err(anyhow::Error::from)
        })
        .collect::<Result<_>>()?;
    let bytes: u64 = values.iter().map(|v| v.len() as u64).sum();
    std::fs::create_dir_all(dir)?;
    let env = unsafe {
        heed::EnvOpenOptions::new().map_size((bytes as usize * 2 + (64 << 20)).next_multiple_of(1 << 20)).open(dir)
    }?;
    let mut wtxn = env.write_txn()?;
    let db: heed::Database<heed::types::Bytes, heed::types::Bytes> = env.create_database(&mut wtxn, None)?;
    for (i, v) in values.iter().enumerate() {
        db.put(&mut wtxn, format!("{:040x}", i * 7919 + 1).as_bytes(), v)?;
    }
    wtxn.commit()?;
    env.prepare_for_closing().wait();
    Ok(bytes)
}

/// create_lsun throughput at `resolution` on `images` synthetic WebP images, with 1 worker and with `threads`
/// (default: all cores).
pub fn bench_dataset(images: usize, resolution: usize, threads: Option<usize>) -> Result<String> {
    let scratch = Scratch::new("dataset")?;
    let lmdb = scratch.0.join("lmdb");
    let t0 = Instant::now();
    let bytes = synthetic_lsun(&lmdb, images)?;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "synthetic LSUN-style LMDB: {images} lossless WebP images, short side 256, long side 256-400, {:.1} MB (made in {:.1} s)",
        bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    let all = threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut workers = vec![1];
    if all > 1 {
        workers.push(all);
    }
    for w in workers {
        let dest = scratch.0.join(format!("out{w}"));
        let mut o = CreateOptions::new(&dest, resolution);
        o.channels = Some(3);
        o.min_size = 0;
        o.workers = w;
        o.progress = false;
        let t = Instant::now();
        let s = create(&mut Lmdb::open(&lmdb)?, &o)?;
        let secs = t.elapsed().as_secs_f64();
        let _ = writeln!(
            report,
            "create_lsun --resolution {resolution} --workers {w}: {} images in {secs:.2} s = {:.1} images/s",
            s.written,
            s.written as f64 / secs
        );
    }
    Ok(report)
}

/// Loader throughput (images/s) at `resolution` over `batches` batches of `batch` (shuffle and mirror on, CPU), with
/// `threads` workers (default: the loader's).
pub fn bench_loader(resolution: usize, batches: usize, batch: usize, threads: Option<usize>) -> Result<String> {
    let scratch = Scratch::new("loader")?;
    let dir = scratch.0.join("ds");
    let count = (batch * 16).clamp(256, 2048);
    let partial = scratch.0.join("ds.partial");
    let mut w = ShardWriter::create(&partial, 3, resolution, 512, serde_json::json!({ "bench": true }))?;
    let rec_bytes = 3 * resolution * resolution;
    for i in 0..count {
        let mut s = i as u64;
        let rec: Vec<u8> = (0..rec_bytes).map(|_| splitmix64(&mut s) as u8).collect();
        w.push(&levels_of_detail(&rec, 3, resolution)?, None, i as u64 + 1)?;
    }
    w.finish(0, serde_json::json!({ "kind": "synthetic" }), String::new(), serde_json::json!({}))?;
    std::fs::rename(&partial, &dir)?;
    let ds = Arc::new(Dataset::open(&dir)?);
    let mut opts = LoaderOptions::new(batch, resolution);
    opts.mirror = true;
    if let Some(n) = threads {
        opts.workers = n;
    }
    let mut l = Loader::new(ds, opts.clone(), tch::Device::Cpu)?;
    for _ in 0..opts.prefetch {
        let _ = l.next_batch()?;
    }
    let t = Instant::now();
    for _ in 0..batches {
        let _ = l.next_batch()?;
    }
    let secs = t.elapsed().as_secs_f64();
    Ok(format!(
        "loader {resolution}x{resolution}, batch {batch}, {} workers, prefetch {}: {batches} batches in {secs:.2} s = {:.0} images/s\n",
        opts.workers,
        opts.prefetch,
        (batches * batch) as f64 / secs
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn benches_run_on_tiny_inputs() {
        let r = super::bench_dataset(6, 16, Some(1)).unwrap();
        assert!(r.contains("--workers 1: 6 images"), "{r}");
        assert!(!r.contains("--workers 2"), "--threads 1 times one worker: {r}");
        let r = super::bench_loader(8, 3, 4, Some(1)).unwrap();
        assert!(r.contains("3 batches") && r.contains("batch 4, 1 workers"), "{r}");
    }
}
