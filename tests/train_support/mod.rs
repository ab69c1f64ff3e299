//! Shared by the training tests: a tiny dataset and a tiny config.
#![allow(dead_code)]

use sg2::config::Config;
use std::path::{Path, PathBuf};

#[path = "../dataset_support/mod.rs"]
pub mod dataset_support;

/// A 32x32 grayscale dataset of `n` IDX images (levels 32..4) in `dir/data`.
pub fn tiny_dataset(dir: &Path, n: usize) -> PathBuf {
    let src = dir.join("idx");
    dataset_support::make_idx(&src, n, false);
    let dest = dir.join("data");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sg2"))
        .args(["dataset-tool", "create_mnist", "--source", src.to_str().unwrap(), "--dest"])
        .arg(&dest)
        .args(["--resolution", "32"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
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
