//! `sg2 import` (official pickles and state dicts) and `sg2 info`.

mod common;
use common::*;
use sg2::model::checkpoint::{load, load_generator, read_safetensors};
use sg2::model::Discriminator;
use std::path::Path;
use tch::nn::VarStore;
use tch::Device;

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

/// Runs sg2 with PATH set to an empty folder, so it cannot start python (or any other program) by name.
fn run_sg2_without_path(args: &[&str]) -> (bool, String, String) {
    let empty = tempfile::tempdir().unwrap();
    let out = sg2_bin().args(args).env("PATH", empty.path()).output().expect("run sg2");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// Imports `pkl` without python; the checkpoint's G_ema and D are exactly the reference state dicts (and its G
/// the same network), its config the reference kwargs', and its networks reproduce every tiny32 golden output.
fn check_pickle_import(pkl: &Path, dir: &Path, mirror: bool) {
    let ckpt = dir.join(format!("{}.safetensors", pkl.file_stem().unwrap().to_str().unwrap()));
    let (ok, stdout, err) = run_sg2_without_path(&["import", pkl.to_str().unwrap(), "--out", ckpt.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(stdout.contains("(G, G_ema, D"), "{stdout}");
    let c = load(&ckpt).unwrap();
    for (prefix, which) in [("G_ema", "G"), ("G", "G"), ("D", "D")] {
        let (reference, _) = read_safetensors(&golden(&format!("tiny32-{which}.safetensors"))).unwrap();
        let ours: Vec<&String> = c.tensors.keys().filter(|k| k.starts_with(&format!("{prefix}."))).collect();
        assert_eq!(ours.len(), reference.len(), "{prefix}: {ours:?}");
        for (name, r) in &reference {
            let t = &c.tensors[&format!("{prefix}.{name}")];
            assert_eq!(t.size(), r.size(), "{prefix}.{name} shape");
            let d = (t - r).abs().max().double_value(&[]);
            assert_eq!(d, 0.0, "{prefix}.{name}");
        }
    }
    assert_eq!(c.config.model, golden_config("tiny32"));
    assert_eq!(c.config.training.mirror, mirror);
    let (_, _, g) = load_generator(&ckpt, Device::Cpu).unwrap();
    let mut dvs = VarStore::new(Device::Cpu);
    let d = Discriminator::new(&dvs.root(), &c.config.model);
    c.load_into("D", &mut dvs).unwrap();
    check_forward_outputs("tiny32", &g, &d);
    check_gradient_outputs("tiny32", &g, &d);
}

#[test]
fn tf_pickle_imports_without_python_and_reproduces_the_golden_outputs() {
    let dir = tempfile::tempdir().unwrap();
    check_pickle_import(&golden("tiny32-tf.pkl"), dir.path(), false);
}

#[test]
fn ada_pickle_imports_without_python_and_reproduces_the_golden_outputs() {
    let dir = tempfile::tempdir().unwrap();
    check_pickle_import(&golden("tiny32-ada.pkl"), dir.path(), false);
}

fn fixture(args: &[&std::ffi::OsStr]) {
    let out = std::process::Command::new(python()).args(args).output().expect("run python");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn pickles_of_every_protocol_import() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut pickles = vec![];
    // Protocol 2 writes bytes as _codecs.encode(text, 'latin1'), 3 as BINBYTES, 4 and 5 add frames and MEMOIZE.
    for protocol in ["2", "3", "5"] {
        // The TF pickle re-encoded.
        let tf = dir.path().join(format!("tf-p{protocol}.pkl"));
        let src = golden("tiny32-tf.pkl");
        fixture(&[fixtures.join("repickle_tf.py").as_os_str(), src.as_os_str(), tf.as_os_str(), protocol.as_ref()]);
        pickles.push((tf, false));
    }
    // ada snapshots with EasyDict kwargs and training_set_kwargs.xflip (torch is slow to start: two protocols).
    for protocol in ["2", "5"] {
        let ada = dir.path().join(format!("ada-p{protocol}.pkl"));
        let (g, d, kw) = (golden("tiny32-G.safetensors"), golden("tiny32-D.safetensors"), golden("tiny32-kwargs.json"));
        let maker = fixtures.join("make_ada_pickle.py");
        let opts = ["--protocol".as_ref(), protocol.as_ref(), "--xflip".as_ref()];
        fixture(
            &[&[maker.as_os_str(), g.as_os_str(), d.as_os_str(), kw.as_os_str(), ada.as_os_str()][..], &opts].concat(),
        );
        pickles.push((ada, true));
    }
    let (reference, _) = read_safetensors(&golden("tiny32-G.safetensors")).unwrap();
    for (pkl, mirror) in pickles {
        let out = dir.path().join("out.safetensors");
        let (ok, stdout, err) =
            run_sg2_without_path(&["import", pkl.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert!(ok, "{}: {err}", pkl.display());
        assert_eq!(stdout.contains("training.mirror = true"), mirror, "{stdout}");
        let c = load(&out).unwrap();
        assert_eq!(c.config.training.mirror, mirror);
        for (name, r) in &reference {
            assert_eq!((&c.tensors[&format!("G_ema.{name}")] - r).abs().max().double_value(&[]), 0.0, "{name}");
        }
    }
}

/// `{'G_ema': <persistent module whose synthesis has modules input and L0_36_512>}`, pickled by hand (protocol 2).
fn stylegan3_like() -> Vec<u8> {
    let text = |s: &str| [&b"X"[..], &(s.len() as u32).to_le_bytes(), s.as_bytes()].concat();
    let dict = |items: &[(&str, Vec<u8>)]| {
        let mut b = b"}".to_vec();
        for (k, v) in items {
            b.extend(text(k));
            b.extend(v);
            b.extend(b"s");
        }
        b
    };
    // _reconstruct_persistent_obj({'state': {'_modules': modules}}); the first use names the global (memo 0).
    let module = |first: bool, modules: &[(&str, Vec<u8>)]| {
        let f: &[u8] = if first { b"ctorch_utils.persistence\n_reconstruct_persistent_obj\nq\x00" } else { b"h\x00" };
        [f, &dict(&[("state", dict(&[("_modules", dict(modules))]))]), b"\x85R"].concat()
    };
    let synthesis = module(false, &[("input", b"N".to_vec()), ("L0_36_512", b"N".to_vec())]);
    [&b"\x80\x02"[..], &dict(&[("G_ema", module(true, &[("synthesis", synthesis)]))]), b"."].concat()
}

/// The one-line error for a file holding `bytes`.
fn import_error(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let pkl = dir.join(name);
    std::fs::write(&pkl, bytes).unwrap();
    let out = dir.join("out.safetensors");
    let (ok, _, err) = run_sg2(&["import", pkl.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(!ok, "{name} imported");
    assert!(!out.exists(), "{name}: wrote a checkpoint");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("error: {}: ", pkl.display())), "{err}");
    err
}

#[test]
fn other_files_get_one_line_saying_what_they_hold() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // pickle.dumps({'a': 1, 'G': [1, 2]}, protocol=2)
    let e =
        import_error(d, "dict.pkl", b"\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00G]q\x01(K\x01K\x02eu.");
    assert!(e.contains("dict.pkl: not a StyleGAN2 pickle: a dict with keys ['a', 'G']"), "{e}");
    // A Python 2 pickle (SHORT_BINSTRING keys) of (1, 2.5, None).
    let e = import_error(d, "tuple.pkl", b"\x80\x02K\x01G@\x04\x00\x00\x00\x00\x00\x00N\x87q\x00.");
    assert!(e.contains("not a StyleGAN2 pickle: a tuple of 3 values (an int, a float, None)"), "{e}");
    // pickle.dumps(os.system, protocol=2) applied to 'ls': refused by name, never looked up.
    let e = import_error(d, "evil.pkl", b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00lsq\x01\x85q\x02Rq\x03.");
    assert!(e.contains("evil.pkl: unsupported pickle global 'posix.system' (only network data is read)"), "{e}");
    let e = import_error(
        d,
        "evil4.pkl",
        b"\x80\x04\x95\x1a\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94.",
    );
    assert!(e.contains("unsupported pickle global 'os.system'"), "{e}");
    let e = import_error(d, "zip.pkl", b"PK\x03\x04\x14\x00\x00\x00rest");
    assert!(e.contains("zip.pkl: not a pickle (starts with 50 4b 03 04 14 00 00 00"), "{e}");
    assert!(e.contains("zip archive"), "{e}");
    let e = import_error(d, "text.pkl", b"{\"G\": 1}");
    assert!(e.contains("text.pkl: not a pickle (starts with 7b 22 47 22"), "{e}");
    let e = import_error(d, "empty.pkl", b"");
    assert!(e.contains("not a pickle (an empty file"), "{e}");
    let mut truncated = std::fs::read(golden("tiny32-tf.pkl")).unwrap();
    truncated.truncate(5000);
    let e = import_error(d, "cut.pkl", &truncated);
    assert!(e.contains("cut.pkl: truncated pickle"), "{e}");
    // A StyleGAN3 snapshot: G_ema.synthesis holds input, L0_36_512, ... layers.
    let e = import_error(d, "sg3.pkl", &stylegan3_like());
    assert!(
        e.contains("sg3.pkl: a StyleGAN3 network (synthesis layers 'input', ...): sg2 implements StyleGAN2"),
        "{e}"
    );
    let (ok, _, err) = run_sg2(&["import", "/nonexistent/net.pkl", "--out", d.join("o").to_str().unwrap()]);
    assert!(!ok && err.contains("/nonexistent/net.pkl: cannot read"), "{err}");
}
