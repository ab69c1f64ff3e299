//! scripts/demo.sh with the test's sg2 binary (SG2_BIN skips the set-up build) on tiny IDX files.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

fn demo(args: &[&str]) -> Output {
    std::process::Command::new("bash")
        .arg(root().join("scripts/demo.sh"))
        .args(args)
        .env("SG2_BIN", SG2)
        .output()
        .expect("run scripts/demo.sh")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

#[test]
fn demo_rejects_a_folder_without_idx_files_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let work = dir.path().join("work");
    let o = demo(&["--source", s(&empty), "--workdir", s(&work)]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let line =
        format!("[demo] error: {}: no train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz] there", s(&empty));
    assert_eq!(err.trim_end().lines().last(), Some(line.as_str()), "{err}");
    assert!(!work.join("data").exists() && !work.join("runs").exists());
}

#[test]
fn demo_rejects_unknown_options_with_its_usage() {
    let o = demo(&["--kimgs", "3"]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("Usage: bash scripts/demo.sh") && err.contains("[demo] error: unknown option --kimgs"),
        "{err}"
    );
    let o = demo(&["--help"]);
    let (out, _) = text(&o);
    assert!(o.status.success());
    for opt in ["--source", "--max-images", "--kimg", "--set", "--seeds", "--trunc", "--metrics", "--detector-dir"] {
        assert!(out.contains(opt), "--help lacks {opt}");
    }
}

/// Runs to the end on tiny data, with the fakes grid changed by training; a second run reuses the dataset and
/// resumes training to a longer kimg.
#[test]
fn demo_runs_to_the_end_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("idx");
    data::make_idx(&src, 64, false);
    let work = dir.path().join("work");
    let none = dir.path().join("no-detectors");
    let common = ["--source", s(&src), "--workdir", s(&work), "--detector-dir", s(&none), "--seeds", "1-3"];
    let sets = ["--set", "logging.tick_kimg=0.016", "--set", "logging.image_snapshot_ticks=1"];
    let o = demo(&[&common[..], &sets, &["--kimg", "0.064"]].concat());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("\nDone.\n"), "{out}");
    assert!(out.contains("metrics:   skipped (fid50k_full): no detector files in"), "{out}");
    assert!(out.contains("tensorboard --logdir runs"), "{out}");
    assert!(work.join("data/fmnist/manifest.json").is_file());
    for seed in 1..=3 {
        assert!(work.join(format!("out/demo/images/seed{seed:04}.png")).is_file());
    }
    assert!(work.join("out/demo/grid.png").is_file());
    let snapshots = |w: &Path| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(w.join("runs"))
            .unwrap()
            .flat_map(|r| std::fs::read_dir(r.unwrap().path()).unwrap())
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("network-snapshot-"))
            .collect();
        v.sort();
        v
    };
    let first = snapshots(&work);
    assert!(!first.is_empty());
    // The summary names the start and latest fakes grids; they differ visibly.
    let fakes = out.lines().find(|l| l.trim_start().starts_with("fakes:")).unwrap();
    let paths: Vec<&str> = fakes.split_whitespace().filter(|w| w.ends_with(".png")).collect();
    assert_eq!(paths.len(), 2, "{fakes}");
    let (a, b) =
        (image::open(work.join(paths[0])).unwrap().to_luma8(), image::open(work.join(paths[1])).unwrap().to_luma8());
    let diff = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (*x as f64 - *y as f64).abs()).sum::<f64>()
        / a.as_raw().len() as f64;
    assert!(diff > 1.0, "fakes grid barely changed: mean |diff| {diff}");

    let o = demo(&[&common[..], &sets, &["--kimg", "0.128"]].concat());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(err.contains("reusing the dataset in data/fmnist"), "{err}");
    assert!(err.contains("resuming training from the newest snapshot"), "{err}");
    let second = snapshots(&work);
    assert!(second.last() > first.last(), "{first:?} -> {second:?}");
}
