//! `sg2 train` on bad input: one clear line naming the path and the problem, exit status 1, nothing written.

mod common;
mod train_support;
use common::*;
use train_support::*;

fn config_file(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("tiny.toml");
    std::fs::write(&p, tiny_config(&[]).to_toml()).unwrap();
    p
}

fn train_err(args: &[&str]) -> String {
    let out = sg2_bin().arg("train").args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    err
}

#[test]
fn bad_data_is_named_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path());
    let (c, runs) = (cfg.to_str().unwrap(), dir.path().join("runs"));
    let r = runs.to_str().unwrap();
    let missing = dir.path().join("nope");
    let err = train_err(&["--config", c, "--data", missing.to_str().unwrap(), "--outdir", r]);
    assert_eq!(err.trim(), format!("error: --data {}: no such folder", missing.display()));
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let err = train_err(&["--config", c, "--data", empty.to_str().unwrap(), "--outdir", r]);
    assert!(err.contains(&format!("--data {}", empty.display())) && err.contains("not an sg2 dataset"), "{err}");
    let data = tiny_dataset(dir.path(), 4);
    let d = data.to_str().unwrap();
    let err = train_err(&["--config", c, "--data", d, "--outdir", r, "--resolution", "64"]);
    assert!(err.contains("no 64x64 level (levels [32, 16, 8, 4])"), "{err}");
    let err = train_err(&["--config", c, "--data", d, "--outdir", r, "--set", "model.channels=3"]);
    assert!(err.contains("images have 1 channel(s) but model.channels = 3"), "{err}");
    assert!(!runs.exists(), "nothing is written on bad input");
}

#[test]
fn bad_resume_paths_are_named_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path());
    let data = tiny_dataset(dir.path(), 4);
    let runs = dir.path().join("runs");
    let base =
        ["--config", cfg.to_str().unwrap(), "--data", data.to_str().unwrap(), "--outdir", runs.to_str().unwrap()];
    let with = |extra: &[&str]| train_err(&[&base[..], extra].concat());
    let missing = dir.path().join("missing.safetensors");
    let err = with(&["--resume", missing.to_str().unwrap()]);
    assert!(err.contains(&format!("{}: no such checkpoint", missing.display())), "{err}");
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let err = with(&["--resume", junk.to_str().unwrap()]);
    assert!(err.contains(&format!("{}: not a valid safetensors file", junk.display())), "{err}");
    // An imported network can generate but holds no training state.
    let imported = import_golden("tiny32", dir.path());
    let err = with(&["--resume", imported.to_str().unwrap()]);
    assert!(err.contains("holds no training state"), "{err}");
    let err = with(&["--resume", "latest"]);
    assert!(err.contains("--resume latest: no complete snapshot of a 'tiny-data' run under"), "{err}");
}

#[test]
fn a_cli_run_resumes_latest_in_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path());
    let data = tiny_dataset(dir.path(), 8);
    let runs = dir.path().join("runs");
    let base =
        ["--config", cfg.to_str().unwrap(), "--data", data.to_str().unwrap(), "--outdir", runs.to_str().unwrap()];
    let (ok, out, err) = run_sg2(&[&["train"][..], &base, &["--kimg", "0.008", "--seed", "3"]].concat());
    assert!(ok, "{err}");
    assert!(out.contains("tick 0  kimg 0.004") && out.contains("Exiting..."), "{out}");
    let (ok, out, err) = run_sg2(&[&["train"][..], &base, &["--kimg", "0.012", "--resume", "latest"]].concat());
    assert!(ok, "{err}");
    assert!(out.contains("resuming from"), "{out}");
    let run = runs.join("00000-tiny-data");
    assert!(run.join("network-snapshot-000000.012.safetensors").is_file());
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 1);
    let (ok, out, _) = run_sg2(&[&["train"][..], &base, &["--kimg", "0.012", "--resume", "latest"]].concat());
    assert!(ok && out.contains("nothing to do"), "{out}");
}
