//! Fixtures of the training tests: a tiny dataset and a tiny config.

use super::{data, run_sg2, s};
use sg2::config::Config;
use std::path::{Path, PathBuf};

/// A 32x32 grayscale dataset of `n` IDX images (levels 32..4) in `dir/data`.
pub fn tiny_dataset(dir: &Path, n: usize) -> PathBuf {
    let src = dir.join("idx");
    data::make_idx(&src, n, false);
    let dest = dir.join("data");
    let (ok, _, err) =
        run_sg2(&["dataset-tool", "create_mnist", "--source", s(&src), "--dest", s(&dest), "--resolution", "32"]);
    assert!(ok, "{err}");
    dest
}

/// An 8x8 grayscale network small enough for steps in milliseconds; batch 4, ticks of 8 images.
pub fn tiny_config(extra: &[&str]) -> Config {
    let mut sets: Vec<String> = [
        "model.resolution=8",
        "model.channels=1",
        "model.z_dim=16",
        "model.w_dim=16",
        "model.mapping_layers=2",
        "model.fmap_base=64",
        "model.fmap_max=16",
        "training.batch=4",
        "training.total_kimg=0.016",
        "training.ema_kimg=0.01",
        "training.ema_rampup=0.05",
        "training.g_reg_interval=2",
        "training.d_reg_interval=4",
        "logging.tick_kimg=0.008",
        "logging.snapshot_ticks=1",
        "logging.image_snapshot_ticks=1",
        "logging.keep_snapshots=0",
        "logging.grid_w=4",
        "logging.grid_h=2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    sets.extend(extra.iter().map(|s| s.to_string()));
    sg2::config::parse("", "tiny.toml", &sets).unwrap()
}
