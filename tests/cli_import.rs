//! `sg2 import`, `sg2 info` and the official-pickle converter.

mod common;
use common::*;
use sg2::model::checkpoint::{load, read_safetensors};

#[test]
fn import_then_info_reports_official_counts() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("tiny32.safetensors");
    let file = |f: &str| golden(&format!("tiny32-{f}"));
    let (g, d, kw) = (file("G.safetensors"), file("D.safetensors"), file("kwargs.json"));
    let (ok, _, err) = run_sg2(&["import", "--g", s(&g), "--d", s(&d), "--kwargs", s(&kw), "--out", s(&ckpt)]);
    assert!(ok, "import failed: {err}");
    let c = load(&ckpt).unwrap();
    assert!(c.has("G") && c.has("G_ema") && c.has("D"));
    assert_eq!(c.config.model.fmap_base, 1024); // channel_base 2048 / 2
    let (ok, out, err) = run_sg2(&["info", "--network", ckpt.to_str().unwrap(), "--device", "cpu"]);
    assert!(ok, "{err}");
    assert!(out.contains("synthesis.b32.torgb"), "{out}");
    // G totals of tiny32 from its reference state dict.
    let (g, _) = read_safetensors(&golden("tiny32-G.safetensors")).unwrap();
    let buffers = ["w_avg", "noise_const", "resample_filter"];
    let (mut p, mut b) = (0i64, 0i64);
    for (name, t) in &g {
        if buffers.iter().any(|s| name.ends_with(s)) {
            b += t.numel() as i64;
        } else {
            p += t.numel() as i64;
        }
    }
    let total_line = out.lines().find(|l| l.starts_with("Total")).unwrap();
    let nums: Vec<i64> = total_line.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
    assert_eq!(nums, vec![p, b], "{total_line}");
}

#[test]
fn import_without_d_generates_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("g.safetensors");
    let (ok, stdout, err) = run_sg2(&[
        "import",
        "--g",
        golden("tiny32-G.safetensors").to_str().unwrap(),
        "--kwargs",
        golden("tiny32-kwargs.json").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("cannot resume training"));
    assert!(!load(&out).unwrap().has("D"));
}

#[test]
fn import_rejects_mismatched_networks_clearly_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bad.safetensors");
    let (ok, _, err) = run_sg2(&[
        "import",
        "--g",
        golden("tiny32-G.safetensors").to_str().unwrap(),
        "--kwargs",
        golden("tiny64-kwargs.json").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(err.starts_with("error: ") && err.trim().lines().count() == 1, "{err}");
    assert!(err.contains("tiny32-G.safetensors") && err.contains("shape"), "{err}");
    assert!(!out.exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no temp files left");

    let (ok, _, err) = run_sg2(&[
        "import",
        "--g",
        "/nonexistent/G.safetensors",
        "--kwargs",
        golden("tiny32-kwargs.json").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("/nonexistent/G.safetensors"), "{err}");
}

#[test]
fn info_rejects_non_checkpoints() {
    let (ok, _, err) = run_sg2(&["info", "--network", golden("tiny32-G.safetensors").to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("not an sg2 checkpoint") && err.contains("sg2 import"), "{err}");
}

/// Runs the converter on `pkl` and checks the result equals the tiny32 reference state dicts and kwargs.
fn check_conversion(pkl: &std::path::Path, dir: &std::path::Path) {
    let prefix = dir.join("conv");
    let script = root().join("scripts/convert_official.py");
    let out = std::process::Command::new(python()).arg(&script).arg(pkl).arg(&prefix).output().expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for which in ["G", "D"] {
        let (ours, _) = read_safetensors(&dir.join(format!("conv-{which}.safetensors"))).unwrap();
        let (reference, _) = read_safetensors(&golden(&format!("tiny32-{which}.safetensors"))).unwrap();
        assert_eq!(ours.keys().collect::<Vec<_>>(), reference.keys().collect::<Vec<_>>(), "{which} names");
        for (name, r) in &reference {
            assert_eq!(ours[name].size(), r.size(), "{which} {name} shape");
            let d = (&ours[name] - r).abs().max().double_value(&[]);
            assert_eq!(d, 0.0, "{which} {name}");
        }
    }
    let kw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("conv-kwargs.json")).unwrap()).unwrap();
    let cfg = sg2::model::import::config_from_kwargs(&kw).unwrap();
    assert_eq!(cfg, golden_config("tiny32"));
}

#[test]
fn tf_pickle_converts_to_the_reference_state_dicts() {
    let dir = tempfile::tempdir().unwrap();
    check_conversion(&golden("tiny32-tf.pkl"), dir.path());
}

#[test]
fn ada_pickle_converts_to_the_reference_state_dicts() {
    let dir = tempfile::tempdir().unwrap();
    let pkl = dir.path().join("ada.pkl");
    let maker = root().join("tests/fixtures/make_ada_pickle.py");
    let out = std::process::Command::new(python())
        .arg(maker)
        .args([golden("tiny32-G.safetensors"), golden("tiny32-D.safetensors"), golden("tiny32-kwargs.json")])
        .arg(&pkl)
        .output()
        .expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    check_conversion(&pkl, dir.path());
}

#[test]
fn converter_rejects_other_pickles() {
    let dir = tempfile::tempdir().unwrap();
    let pkl = dir.path().join("x.pkl");
    let out = std::process::Command::new(python())
        .args(["-c", &format!("import pickle; pickle.dump({{'a': 1}}, open({:?}, 'wb'))", pkl.to_str().unwrap())])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = root().join("scripts/convert_official.py");
    let out = std::process::Command::new(python()).arg(script).arg(&pkl).arg(dir.path().join("o")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a StyleGAN2 network pickle"));
}
