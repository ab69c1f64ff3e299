//! `info`, `verify`, `extract` and `grid`: looking into a dataset.

use super::shards::{sha256_file, Dataset};
use super::transform::from_chw;
use crate::image_io::ImageU8;
use crate::util::{progress_bar, Progress};
use anyhow::{ensure, Result};
use std::fmt::Write as _;
use std::path::Path;

/// Counts, levels, sizes and label classes.
pub fn info(ds: &Dataset) -> String {
    let m = &ds.manifest;
    let mut s = String::new();
    let _ = writeln!(s, "dataset      {}", ds.path.display());
    let _ = writeln!(s, "images       {}", m.count);
    let _ = writeln!(
        s,
        "resolution   {0}x{0}, {1} channel{2}",
        m.resolution,
        m.channels,
        if m.channels == 1 { "" } else { "s" }
    );
    let _ = writeln!(s, "fingerprint  {}", ds.fingerprint());
    let _ = writeln!(s, "levels       {}", m.levels.len());
    for &r in &m.levels {
        let shards: Vec<_> = m.shards.iter().filter(|x| x.level == r).collect();
        let bytes: u64 = shards.iter().map(|x| x.bytes).sum();
        let _ = writeln!(
            s,
            "  {r:>5}x{r:<5} {:>4} shard{} {:>12.1} MB",
            shards.len(),
            if shards.len() == 1 { " " } else { "s" },
            bytes as f64 / 1e6
        );
    }
    let _ = writeln!(s, "total        {:.1} MB", ds.total_bytes() as f64 / 1e6);
    if m.num_classes > 0 {
        let mut counts = vec![0u64; m.num_classes as usize];
        for i in 0..m.count {
            counts[ds.label(i).unwrap() as usize] += 1;
        }
        let per: Vec<String> = counts.iter().enumerate().map(|(c, n)| format!("{c}:{n}")).collect();
        let _ = writeln!(s, "labels       {} classes ({})", m.num_classes, per.join(" "));
    } else {
        let _ = writeln!(s, "labels       none");
    }
    let src = m.source.get("kind").and_then(|k| k.as_str()).unwrap_or("?");
    let path = m.source.get("path").and_then(|k| k.as_str()).unwrap_or("?");
    let _ = writeln!(s, "source       {src} {path}");
    if !m.command.is_empty() {
        let _ = writeln!(s, "command      {}", m.command);
    }
    s
}

/// Checks every shard and the labels against their sizes and SHA-256, and reads every record of every level.
/// Returns the report; an error names the first bad file.
pub fn verify(path: &Path, progress: bool) -> Result<String> {
    let ds = Dataset::open(path)?;
    let m = &ds.manifest;
    let total: u64 = m.shards.iter().map(|s| s.bytes).sum::<u64>() + m.labels.as_ref().map_or(0, |l| l.bytes);
    let pb = progress_bar(Progress::Bytes, total, "verifying", progress);
    let mut files = m.shards.iter().map(|s| (s.file.clone(), s.sha256.clone())).collect::<Vec<_>>();
    if let Some(l) = &m.labels {
        files.push((l.file.clone(), l.sha256.clone()));
    }
    // Every file is checked, so one run lists all the damage.
    let mut bad = vec![];
    for (file, want) in &files {
        let p = ds.path.join(file);
        let got = sha256_file(&p, |n| pb.inc(n))?;
        if &got != want {
            bad.push(format!("{file} (sha256 {got}, manifest {want})"));
        }
    }
    pb.finish_and_clear();
    ensure!(
        bad.is_empty(),
        "{}: {} of {} files fail their checksum (corrupt): {}",
        ds.path.display(),
        bad.len(),
        files.len(),
        bad.join(", ")
    );
    let mut records = 0u64;
    for &r in &ds.levels {
        for i in 0..ds.count {
            ensure!(ds.record(r, i).len() == ds.channels * r * r, "record {i} at {r}: wrong size");
            records += 1;
        }
    }
    Ok(format!(
        "{}: OK ({} files, {:.1} MB, {} images x {} levels = {records} records, checksums match)",
        ds.path.display(),
        files.len(),
        total as f64 / 1e6,
        ds.count,
        ds.levels.len()
    ))
}

fn pick_level(ds: &Dataset, resolution: Option<usize>) -> Result<usize> {
    let r = resolution.unwrap_or(ds.resolution);
    ensure!(ds.has_level(r), "{}: no level {r} (levels: {:?})", ds.path.display(), ds.levels);
    Ok(r)
}

/// Writes records as `DEST/00000042.png` (by record index). Returns the number written.
pub fn extract(
    ds: &Dataset,
    dest: &Path,
    resolution: Option<usize>,
    max_images: Option<u64>,
    progress: bool,
) -> Result<u64> {
    let r = pick_level(ds, resolution)?;
    ensure!(max_images != Some(0), "--max-images 0: must be >= 1");
    let n = max_images.unwrap_or(ds.count).min(ds.count);
    crate::util::create_dir(dest)?;
    let pb = progress_bar(Progress::Count, n, "extracting", progress);
    for i in 0..n {
        let img = from_chw(ds.record(r, i), ds.channels, r, r);
        img.save_png(dest.join(format!("{i:08}.png")))?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    Ok(n)
}

/// The first `count` records at level `resolution` in a near-square grid, as one image.
pub fn grid_image(ds: &Dataset, resolution: Option<usize>, count: u64) -> Result<ImageU8> {
    let r = pick_level(ds, resolution)?;
    ensure!(count >= 1, "--count 0: must be >= 1");
    let n = count.min(ds.count) as usize;
    if (n as u64) < count {
        eprintln!("note: {} holds {n} images: the sheet shows all of them", ds.path.display());
    }
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    crate::image_io::ensure_fits("--count", 1, (cols * r) as u64, (rows * r) as u64, ds.channels as u64)?;
    let tiles: Vec<ImageU8> = (0..n).map(|i| from_chw(ds.record(r, i as u64), ds.channels, r, r)).collect();
    crate::image_io::grid(&tiles, cols)
}

/// Writes the contact sheet (PNG, or JPEG for a `.jpg` name).
pub fn grid(ds: &Dataset, out: &Path, resolution: Option<usize>, count: u64) -> Result<()> {
    grid_image(ds, resolution, count)?.save(out)
}
