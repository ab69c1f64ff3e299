//! Checkpoint problems get one line naming the file and what is wrong with it, the same from every command.

mod common;
use common::*;
use sg2::model::checkpoint::{read_safetensors, write_safetensors, KEY_FORMAT};
use std::path::Path;

/// Fails in one `error:` line holding every string of `want`.
fn refused(r: (bool, String, String), want: &[&str]) {
    let (ok, _, err) = r;
    assert!(!ok, "expected a failure, stderr: {err}");
    assert!(err.starts_with("error: ") && err.trim().lines().count() == 1, "one line: {err}");
    for w in want {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
}

fn on_network(net: &Path) -> Vec<(bool, String, String)> {
    let n = net.to_str().unwrap();
    let out = net.with_extension("out");
    vec![
        run_sg2(&["--device", "cpu", "info", "--network", n]),
        run_sg2(&["--device", "cpu", "generate", "--network", n, "--seeds", "0", "--outdir", out.to_str().unwrap()]),
    ]
}

#[test]
fn folders_empty_files_and_other_formats_say_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    for r in on_network(dir.path()) {
        refused(r, &[&format!("{}: is a folder, not a checkpoint file", dir.path().display())]);
    }
    let empty = dir.path().join("empty.safetensors");
    std::fs::write(&empty, b"").unwrap();
    for r in on_network(&empty) {
        refused(r, &["empty.safetensors: empty file (0 bytes), not a checkpoint"]);
    }
    // An official pickle points to `sg2 import`.
    let pkl = root().join("tests/golden/tiny32-ada.pkl");
    for r in on_network(&pkl) {
        refused(r, &["tiny32-ada.pkl: a Python pickle or torch.save file, not an sg2 checkpoint; convert it with `sg2 import`"]);
    }
    // Another version of the format: say which, rather than "no metadata".
    let ckpt = import_golden("tiny32", dir.path());
    let (tensors, mut meta) = read_safetensors(&ckpt).unwrap();
    meta.insert(KEY_FORMAT.into(), "sg2-checkpoint-0".into());
    let other = dir.path().join("other.safetensors");
    write_safetensors(&other, &tensors.into_iter().collect::<Vec<_>>(), &meta).unwrap();
    for r in on_network(&other) {
        refused(r, &["other.safetensors: checkpoint format 'sg2-checkpoint-0', this sg2 reads 'sg2-checkpoint-1'"]);
    }
}

/// `info` makes the checks `generate` makes: a checkpoint one refuses, the other refuses the same way.
#[test]
fn info_refuses_what_generate_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = import_golden("tiny32", dir.path());
    let (tensors, meta) = read_safetensors(&ckpt).unwrap();
    let without = |drop: &dyn Fn(&str) -> bool, name: &str| {
        let kept: Vec<_> =
            tensors.iter().filter(|(k, _)| !drop(k)).map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
        let p = dir.path().join(name);
        write_safetensors(&p, &kept, &meta).unwrap();
        p
    };
    let broken = without(&|k| k == "G_ema.synthesis.b32.torgb.bias", "broken.safetensors");
    for r in on_network(&broken) {
        refused(r, &["broken.safetensors", "G_ema: missing synthesis.b32.torgb.bias"]);
    }
    let d_only = without(&|k| k.starts_with('G'), "d_only.safetensors");
    for r in on_network(&d_only) {
        refused(r, &["d_only.safetensors", "holds no generator"]);
    }
}

/// Resuming with another [model] names the first key that differs and both values.
#[test]
fn resume_with_another_model_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(&cfg, common::training::tiny_config(&[]).to_toml()).unwrap();
    let data = common::training::tiny_dataset(dir.path(), 4);
    let runs = dir.path().join("runs");
    let base = ["train", "--config", cfg.to_str().unwrap(), "--data", data.to_str().unwrap()];
    let (ok, _, err) = run_sg2(&[&base[..], &["--outdir", runs.to_str().unwrap(), "--kimg", "0.004"]].concat());
    assert!(ok, "{err}");
    let snap = std::fs::read_dir(runs.join("00000-tiny-data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".safetensors"))
        .unwrap();
    let other = dir.path().join("other");
    let resume = ["--outdir", other.to_str().unwrap(), "--resume", snap.to_str().unwrap(), "--kimg", "0.008"];
    let (ok, _, err) = run_sg2(&[&base[..], &resume, &["--set", "model.fmap_max=8"]].concat());
    assert!(!ok, "{err}");
    assert!(err.contains("the snapshot's model.fmap_max = 16 differs from the config's 8"), "{err}");
    assert!(err.contains("(to resume it, pass --set model.fmap_max=16, or the config it was trained with)"), "{err}");
    let (ok, _, err) = run_sg2(&[&base[..], &resume, &["--resolution", "16"]].concat());
    assert!(
        !ok && err.contains("model.resolution = 8 differs from the config's 16 (to resume it, pass --resolution 8)"),
        "{err}"
    );
    // Already trained to --kimg: the model is still checked, so "nothing to do" never hides a mismatch.
    let reached = ["--outdir", other.to_str().unwrap(), "--resume", snap.to_str().unwrap(), "--kimg", "0.004"];
    let (ok, out, err) = run_sg2(&[&base[..], &reached, &["--set", "model.fmap_max=8"]].concat());
    assert!(!ok && !out.contains("nothing to do"), "{out}");
    assert!(err.contains("the snapshot's model.fmap_max = 16 differs from the config's 8"), "{err}");
    let (ok, out, err) = run_sg2(&[&base[..], &reached].concat());
    assert!(ok && out.contains("nothing to do"), "{out}{err}");
    assert!(!other.exists(), "nothing to do writes nothing");
}

/// Damage inside the tensor data (which the format's own checks cannot see) and a diverged network are refused by
/// name; so is a path that is not a regular file (a FIFO would block forever).
#[test]
fn altered_bytes_nan_weights_and_special_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = import_golden("tiny32", dir.path());
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let last = bytes.len() - 3;
    bytes[last] ^= 0x40;
    let flipped = dir.path().join("flipped.safetensors");
    std::fs::write(&flipped, &bytes).unwrap();
    for r in on_network(&flipped) {
        refused(r, &["flipped.safetensors: damaged"]);
    }

    let (mut tensors, meta) = read_safetensors(&ckpt).unwrap();
    let name = "G_ema.synthesis.b32.torgb.weight";
    let _ = tensors.get_mut(name).unwrap().get(0).get(0).fill_(f64::NAN);
    let nan = dir.path().join("nan.safetensors");
    write_safetensors(&nan, &tensors.into_iter().collect::<Vec<_>>(), &meta).unwrap();
    let (ok, _, err) = run_sg2(&["--device", "cpu", "info", "--network", s(&nan)]);
    assert!(ok, "info inspects a diverged network: {err}");
    let out = dir.path().join("nan-out");
    let gen = run_sg2(&["--device", "cpu", "generate", "--network", s(&nan), "--seeds", "0", "--outdir", s(&out)]);
    refused(gen, &["nan.safetensors: G_ema.synthesis.b32.torgb.weight holds NaN or infinite values"]);
    assert!(!out.join("seed0000.png").exists());

    let fifo = dir.path().join("fifo.safetensors");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    for r in on_network(&fifo) {
        refused(r, &["fifo.safetensors: not a regular file"]);
    }
}
