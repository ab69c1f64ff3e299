//! `sg2 generate`, `style-mix` and `interpolate` on the golden networks: the official seeds-to-images mapping.

mod common;
use common::*;
use std::path::Path;
use tch::{Kind, Tensor};

const SEEDS: [u32; 8] = [0, 1, 6600, 6601, 6602, 6603, 6604, 6605];

/// Images from different batch compositions may differ by rounding (one level on a few pixels), as the golden
/// README allows; the same command gives identical bytes.
fn assert_same_image(what: &str, a: &image::RgbImage, b: &image::RgbImage) {
    assert_eq!(a.dimensions(), b.dimensions(), "{what}");
    let t = |i: &image::RgbImage| Tensor::from_slice(i.as_raw());
    assert_uint8_match(what, &t(a), &t(b));
}

fn read_png(path: &Path) -> image::DynamicImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Generated PNGs of SEEDS as an NHWC uint8 tensor.
fn pngs_as_tensor(dir: &Path) -> Tensor {
    let imgs: Vec<Tensor> = SEEDS
        .iter()
        .map(|s| {
            let img = read_png(&dir.join(format!("seed{s:04}.png"))).to_rgb8();
            let (w, h) = img.dimensions();
            Tensor::from_slice(img.as_raw()).reshape([1, h as i64, w as i64, 3])
        })
        .collect();
    Tensor::cat(&imgs, 0)
}

fn generate(ckpt: &Path, out: &Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "generate",
        "--network",
        ckpt.to_str().unwrap(),
        "--seeds",
        "0,1,6600-6605",
        "--outdir",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    run_sg2(&args)
}

#[test]
fn golden_images_for_const_and_tf_noise() {
    for net in ["tiny32", "tiny64"] {
        let dir = tempfile::tempdir().unwrap();
        let ckpt = import_golden(net, dir.path());
        let io = golden_io(net);
        for (psi, noise, key) in [
            ("1", "const", "uint8_const_psi1.0"),
            ("0.5", "const", "uint8_const_psi0.5"),
            ("0.5", "tf", "uint8_tfnoise_psi0.5"),
        ] {
            let out = dir.path().join(key);
            let (ok, stdout, err) = generate(&ckpt, &out, &["--trunc", psi, "--noise-mode", noise, "--batch", "3"]);
            assert!(ok, "{net} {key}: {err}");
            assert!(stdout.contains("Generating image for seed 6600 (2/8) ..."), "{stdout}");
            assert_uint8_match(&format!("{net} {key}"), &pngs_as_tensor(&out), &io[key]);
        }
    }
}

#[test]
fn same_command_gives_identical_bytes_and_random_noise_differs() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = import_golden("tiny32", dir.path());
    let (a, b, r) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("r"));
    let c = dir.path().join("c");
    assert!(generate(&ckpt, &a, &[]).0);
    assert!(generate(&ckpt, &b, &[]).0);
    assert!(generate(&ckpt, &c, &["--batch", "5"]).0);
    assert!(generate(&ckpt, &r, &["--noise-mode", "random"]).0);
    for s in SEEDS {
        let name = format!("seed{s:04}.png");
        let bytes = |d: &Path| std::fs::read(d.join(&name)).unwrap();
        assert!(bytes(&a) == bytes(&b), "{name}: same command, different bytes");
        assert!(bytes(&a) != bytes(&r), "{name}: random noise gave the const image");
        assert_same_image(&name, &read_png(&a.join(&name)).to_rgb8(), &read_png(&c.join(&name)).to_rgb8());
    }
}

#[test]
fn grid_holds_every_image() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = import_golden("tiny32", dir.path());
    let grid = dir.path().join("grid.png");
    let (ok, _, err) = generate(&ckpt, &dir.path().join("o"), &["--grid", grid.to_str().unwrap()]);
    assert!(ok, "{err}");
    let g = read_png(&grid).to_rgb8();
    assert_eq!(g.dimensions(), (3 * 32, 3 * 32)); // 8 images -> 3 columns, 3 rows
    let first = read_png(&dir.path().join("o/seed0000.png")).to_rgb8();
    assert_eq!(g.get_pixel(5, 7), first.get_pixel(5, 7));
    // A seed named twice is one image (and one cell).
    let grid2 = dir.path().join("grid2.png");
    let o2 = dir.path().join("o2");
    let args = ["generate", "--network", s(&ckpt), "--seeds", "1,0,1,1", "--outdir", s(&o2)];
    let (ok, out, err) = run_sg2(&[&args[..], &["--device", "cpu", "--grid", s(&grid2)]].concat());
    assert!(ok && err.contains("--seeds names 2 seed(s) more than once; each is generated once (2 images)"), "{err}");
    assert_eq!(out.matches("Generating image for seed").count(), 2, "{out}");
    assert_eq!(read_png(&grid2).to_rgb8().dimensions(), (2 * 32, 32));
}

#[test]
fn style_mix_grid_layout_and_diagonal() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = import_golden("tiny32", dir.path());
    let out = dir.path().join("mix.png");
    let (ok, _, err) = run_sg2(&[
        "style-mix",
        "--network",
        ckpt.to_str().unwrap(),
        "--rows",
        "0,1,6600",
        "--cols",
        "0,1",
        "--styles",
        "0-7",
        "--trunc",
        "0.5",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(ok, "{err}");
    let grid = read_png(&out).to_rgb8();
    assert_eq!(grid.dimensions(), (3 * 32, 4 * 32));
    let plain = dir.path().join("plain");
    assert!(generate(&ckpt, &plain, &["--trunc", "0.5"]).0);
    let tile = |gx: u32, gy: u32| image::imageops::crop_imm(&grid, gx * 32, gy * 32, 32, 32).to_image();
    let seed_img = |s: u32| read_png(&plain.join(format!("seed{s:04}.png"))).to_rgb8();
    // Corner black; edges are the plain images; with every layer mixed, a cell equals its column seed, so the
    // diagonal (row seed == column seed) equals plain generation too.
    assert!(tile(0, 0).pixels().all(|p| p.0 == [0, 0, 0]));
    assert_same_image("top 0", &tile(1, 0), &seed_img(0));
    assert_same_image("top 1", &tile(2, 0), &seed_img(1));
    assert_same_image("left 6600", &tile(0, 3), &seed_img(6600));
    assert_same_image("diagonal 0", &tile(1, 1), &seed_img(0));
    assert_same_image("diagonal 1", &tile(2, 2), &seed_img(1));
    assert_same_image("cell 6600 x 0", &tile(1, 3), &seed_img(0));
}

#[test]
fn interpolation_writes_a_looping_gif() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = import_golden("tiny32", dir.path());
    for space in ["w", "z"] {
        let out = dir.path().join(format!("walk-{space}.gif"));
        let (ok, _, err) = run_sg2(&[
            "interpolate",
            "--network",
            ckpt.to_str().unwrap(),
            "--seeds",
            "1,2,3",
            "--frames",
            "4",
            "--space",
            space,
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ]);
        assert!(ok, "{err}");
        let file = std::fs::File::open(&out).unwrap();
        let decoder = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(file)).unwrap();
        let frames = image::AnimationDecoder::into_frames(decoder).collect_frames().unwrap();
        assert_eq!(frames.len(), 12);
        assert_eq!(frames[0].buffer().dimensions(), (32, 32));
    }
}

#[test]
fn bad_checkpoints_fail_clearly_without_output() {
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("corrupt.safetensors");
    std::fs::write(&corrupt, b"\x09\x00\x00\x00\x00\x00\x00\x00{not json").unwrap();
    let cases = [
        (dir.path().join("missing.safetensors"), "no such checkpoint"),
        (corrupt.clone(), "not a valid safetensors file"),
        (golden("tiny32-G.safetensors"), "not an sg2 checkpoint"),
    ];
    for (i, (ckpt, msg)) in cases.iter().enumerate() {
        let out = dir.path().join(format!("out{i}"));
        let (ok, _, err) = generate(ckpt, &out, &[]);
        assert!(!ok);
        assert!(err.contains(msg) && err.contains(ckpt.file_name().unwrap().to_str().unwrap()), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!out.exists(), "no output for a bad checkpoint");
    }
    let ckpt = import_golden("tiny32", dir.path());
    let (ok, _, err) = generate(&ckpt, &dir.path().join("o"), &["--class", "3"]);
    assert!(!ok && err.contains("unconditional"), "{err}");
    let (ok, _, err) = generate(&ckpt, &dir.path().join("o"), &["--noise-mode", "loud"]);
    assert!(!ok && err.contains("'loud' for '--noise-mode") && err.contains("const, random, none, tf"), "{err}");
}

#[test]
fn z_for_seed_is_numpy_randn() {
    // RandomState(6600).randn(1, 512)[0, :3] as float32, from tests/golden/numpy_randn.json.
    let j: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden("numpy_randn.json")).unwrap()).unwrap();
    let vals = j.as_object().unwrap().iter().find(|(k, _)| k.contains("6600")).map(|(_, v)| v.clone()).unwrap();
    let z = sg2::generate::z_for_seed(6600, 512);
    let expect: Vec<f64> = vals["values"].as_array().unwrap().iter().take(3).map(|v| v.as_f64().unwrap()).collect();
    for (i, e) in expect.iter().enumerate() {
        assert_eq!(z.double_value(&[0, i as i64]), (*e as f32) as f64);
    }
    assert_eq!(z.kind(), Kind::Float);
}

#[test]
fn imported_pickles_generate_the_golden_images() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["tf", "ada"] {
        let ckpt = dir.path().join(format!("{kind}.safetensors"));
        let pkl = golden(&format!("tiny32-{kind}.pkl"));
        let (ok, _, err) = run_sg2(&["import", pkl.to_str().unwrap(), "--out", ckpt.to_str().unwrap()]);
        assert!(ok, "{err}");
        let io = golden_io("tiny32");
        for (psi, noise, key) in [("0.5", "tf", "uint8_tfnoise_psi0.5"), ("1", "const", "uint8_const_psi1.0")] {
            let outdir = dir.path().join(format!("{kind}-{key}"));
            let (ok, _, err) = generate(&ckpt, &outdir, &["--trunc", psi, "--noise-mode", noise]);
            assert!(ok, "{err}");
            assert_uint8_match(key, &pngs_as_tensor(&outdir), &io[key]);
        }
    }
}

/// A conditional network without --class is refused by every command that renders it, before any output or work
/// is announced.
#[test]
fn conditional_networks_need_a_class_everywhere_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(&cfg, common::training::tiny_config(&["model.c_dim=10"]).to_toml()).unwrap();
    let data = common::training::tiny_dataset(dir.path(), 4);
    let runs = dir.path().join("runs");
    let (ok, _, err) =
        run_sg2(&["train", "--config", s(&cfg), "--data", s(&data), "--outdir", s(&runs), "--kimg", "0.004"]);
    assert!(ok, "{err}");
    let net = std::fs::read_dir(runs.join("00000-tiny-data"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .unwrap();
    let n = s(&net);
    let mix = dir.path().join("mix.png");
    let walk = dir.path().join("walk.gif");
    for args in [
        vec!["--device", "cpu", "style-mix", "--network", n, "--rows", "0", "--cols", "1", "--out", s(&mix)],
        vec!["--device", "cpu", "interpolate", "--network", n, "--seeds", "0,1", "--out", s(&walk)],
    ] {
        let (ok, out, err) = run_sg2(&args);
        assert!(!ok && err.contains("--class"), "{args:?}: {err}");
        assert!(out.is_empty(), "nothing announced: {out}");
    }
    let target = dir.path().join("t.png");
    image::GrayImage::new(8, 8).save(&target).unwrap();
    let proj = dir.path().join("proj");
    let (ok, out, err) =
        run_sg2(&["--device", "cpu", "project", "--network", n, "--target", s(&target), "--outdir", s(&proj)]);
    assert!(!ok && err.contains("projection needs an unconditional network (this one has 10 classes)"), "{err}");
    assert!(!out.contains("Computing W"), "{out}");
    assert!(!mix.exists() && !walk.exists() && !proj.exists());
}
