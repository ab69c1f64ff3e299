//! `sg2 project` (the official projector) and `sg2 generate --projected-w`, on the golden tiny32 network with the
//! test detectors; the first steps compared with the reference's own projector (tests/golden/tiny32-project.json).

mod common;
use common::{golden, run_sg2};
use image::AnimationDecoder;
use sg2::image_io::ImageU8;
use sg2::metrics::detector::Detector;
use sg2::model::checkpoint::load_generator;
use sg2::project::{load_target, project, w_stats, ProjectOptions};
use std::path::{Path, PathBuf};
use tch::Device;

/// The golden network imported from its ada pickle, and the test detectors.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let ckpt = dir.join("tiny32.safetensors");
    sg2::model::import::import_pickle(&golden("tiny32-ada.pkl"), &ckpt).unwrap();
    let det = dir.join("detectors");
    common::metrics::make_detectors(&det);
    (ckpt, det)
}

/// A 48x40 picture (not square, not the network's size: it is cropped and resized).
fn target_file() -> PathBuf {
    golden("project-target.png")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn projection_lowers_the_distance_and_its_w_renders_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, det) = setup(dir.path());
    let target = target_file();
    let out = dir.path().join("proj");
    let args = ["project", "--network", s(&ckpt), "--target", s(&target), "--num-steps", "30", "--outdir", s(&out)];
    let (ok, stdout, err) = run_sg2(&[&args[..], &["--detector-dir", s(&det), "--save-video"]].concat());
    assert!(ok, "{err}");
    // "step   12/30: dist 0.53 loss 0.61", one line per step (stderr is not a terminal here).
    let steps: Vec<(f64, f64)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("step "))
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(w.len(), 5, "{l}");
            assert!(w[0].ends_with("/30:") && w[1] == "dist" && w[3] == "loss", "{l}");
            (w[2].parse().unwrap(), w[4].parse().unwrap())
        })
        .collect();
    assert_eq!(steps.len(), 30, "{stdout}");
    assert!(stdout.contains("step    1/30: dist "), "{stdout}");
    let first = steps[..3].iter().map(|s| s.0).fold(f64::MIN, f64::max);
    let last = steps[27..].iter().map(|s| s.0).fold(f64::MIN, f64::max);
    assert!(last < 0.7 * first, "distance did not fall: {steps:?}");

    let t = ImageU8::load_png(out.join("target.png")).unwrap();
    assert_eq!((t.width, t.height, t.channels), (32, 32, 3));
    let w = sg2::npz::read_npz(&out.join("projected_w.npz"), "w").unwrap();
    assert_eq!(w.size(), [1, 8, 64]);
    // One w for every layer.
    let spread = (&w - w.narrow(1, 0, 1)).abs().max().double_value(&[]);
    assert_eq!(spread, 0.0);
    let gif = image::codecs::gif::GifDecoder::new(std::io::BufReader::new(
        std::fs::File::open(out.join("proj.gif")).unwrap(),
    ))
    .unwrap();
    let frames = gif.into_frames().collect_frames().unwrap();
    assert_eq!(frames.len(), 30);
    assert_eq!(frames[0].buffer().dimensions(), (64, 32), "target and projection side by side");

    // generate --projected-w renders the same picture. The official projector saves (x + 1) * 255/2 truncated,
    // generate.py x * 127.5 + 128 truncated: at most one level apart.
    let gen = dir.path().join("gen");
    let (ok, _, err) = run_sg2(&[
        "generate",
        "--network",
        s(&ckpt),
        "--projected-w",
        s(&out.join("projected_w.npz")),
        "--outdir",
        s(&gen),
    ]);
    assert!(ok, "{err}");
    let a = ImageU8::load_png(out.join("proj.png")).unwrap();
    let b = ImageU8::load_png(gen.join("proj00.png")).unwrap();
    assert_eq!((a.width, a.height), (b.width, b.height));
    let max = a.data.iter().zip(&b.data).map(|(x, y)| (*x as i32 - *y as i32).abs()).max().unwrap();
    assert!(max <= 1, "proj.png and generate --projected-w differ by {max} levels");
    assert!(a.data.iter().zip(&b.data).any(|(x, y)| x != y) || a.data.iter().all(|&x| x == 0 || x == 255));
}

#[test]
fn first_steps_match_the_reference_projector() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, det) = setup(dir.path());
    let target = target_file();
    // The reference projector's numbers for this network, target, seed and test detector (seed 0), made by
    // tests/fixtures/project_reference.py (see tests/golden/README.md).
    let steps = 5;
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden("tiny32-project.json")).unwrap()).unwrap();
    let floats =
        |v: &serde_json::Value| -> Vec<f64> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };

    // The target: crop and Lanczos resize as PIL's; the filters round differently (measured: 11% of values one
    // level apart, none more).
    let ref_target: Vec<u8> = floats(&r["target"]).iter().map(|&x| x as u8).collect();
    let ours = load_target(&target, 32, 3).unwrap();
    let diffs: Vec<i32> = ours.data.iter().zip(&ref_target).map(|(a, b)| (*a as i32 - *b as i32).abs()).collect();
    let off = diffs.iter().filter(|&&d| d > 0).count() as f64 / diffs.len() as f64;
    assert!(
        diffs.iter().all(|&d| d <= 1) && off <= 0.2,
        "target differs from PIL's: {off} of values off by up to {:?}",
        diffs.iter().max()
    );

    let (_, _, g) = load_generator(&ckpt, Device::Cpu).unwrap();
    let vgg = Detector::load(&det.join("vgg16.pt"), Device::Cpu).unwrap();
    let (w_avg, w_std) = w_stats(&g, 10000, Device::Cpu).unwrap();
    let ref_avg = floats(&r["w_avg"]);
    let ours_avg = Vec::<f32>::try_from(w_avg.flatten(0, -1)).unwrap();
    let scale = ref_avg.iter().fold(1f64, |m, x| m.max(x.abs()));
    for (a, b) in ours_avg.iter().zip(&ref_avg) {
        assert!((*a as f64 - b).abs() <= 1e-4 * scale, "w_avg {a} vs {b}");
    }
    let ref_std = r["w_std"].as_f64().unwrap();
    assert!((w_std - ref_std).abs() <= 1e-4 * ref_std, "w_std {w_std} vs {ref_std}");

    // The same target and seed: libtorch draws the same noise in the same order, so every step's distance and loss
    // agree closely (measured: 5e-6 relative at step 5) and w drifts apart only slowly (8e-4 after 5 steps).
    let target = ImageU8 { width: 32, height: 32, channels: 3, data: ref_target };
    let opts = ProjectOptions { num_steps: steps, seed: 303, ..ProjectOptions::default() };
    let mut got = vec![];
    let p = project(&g, &vgg, &target, &opts, Device::Cpu, |s| got.push(s)).unwrap();
    let (dist, loss) = (floats(&r["dist"]), floats(&r["loss"]));
    assert_eq!(got.len(), steps);
    for (i, s) in got.iter().enumerate() {
        assert!((s.dist - dist[i]).abs() <= 1e-4 * dist[i], "step {}: dist {} vs {}", i + 1, s.dist, dist[i]);
        assert!((s.loss - loss[i]).abs() <= 1e-4 * loss[i], "step {}: loss {} vs {}", i + 1, s.loss, loss[i]);
    }
    for (i, row) in r["w_steps"].as_array().unwrap().iter().enumerate() {
        let ours = Vec::<f32>::try_from(p.w_steps.get(i as i64).flatten(0, -1)).unwrap();
        let diff = ours.iter().zip(floats(row)).map(|(a, b)| (*a as f64 - b).abs()).fold(0.0, f64::max);
        assert!(diff <= 2e-3 * scale, "w after step {}: max |diff| {diff}", i + 1);
    }
}

#[test]
fn bad_inputs_get_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ckpt = d.join("tiny32.safetensors");
    sg2::model::import::import_pickle(&golden("tiny32-ada.pkl"), &ckpt).unwrap();
    let target = target_file();
    let empty = d.join("none");
    std::fs::create_dir_all(&empty).unwrap();
    let project = |network: &Path, target: &Path, det: &Path| {
        run_sg2(&[
            "project",
            "--network",
            s(network),
            "--target",
            s(target),
            "--outdir",
            s(&d.join("o")),
            "--detector-dir",
            s(det),
        ])
    };
    let (ok, _, err) = project(&ckpt, &target, &empty);
    assert!(!ok && err.contains("vgg16.pt: detector file not found"), "{err}");
    let det = d.join("detectors");
    common::metrics::make_detectors(&det);
    let notimg = d.join("notes.png");
    std::fs::write(&notimg, b"hello").unwrap();
    let (ok, _, err) = project(&ckpt, &notimg, &det);
    assert!(!ok && err.contains("notes.png: not a readable image"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // A w of another network's shape.
    let w = d.join("w.npz");
    sg2::npz::write_npz(&w, &[("w", &tch::Tensor::zeros([1, 10, 128], (tch::Kind::Float, Device::Cpu)))]).unwrap();
    let (ok, _, err) =
        run_sg2(&["generate", "--network", s(&ckpt), "--projected-w", s(&w), "--outdir", s(&d.join("g"))]);
    assert!(!ok && err.contains("w.npz") && err.contains("[1, 10, 128]"), "{err}");
    let (ok, _, err) = run_sg2(&["generate", "--network", s(&ckpt), "--projected-w", s(&w), "--seeds", "1"]);
    assert!(!ok && err.contains("cannot be used with"), "{err}");
    let (ok, _, err) = run_sg2(&["generate", "--network", s(&ckpt)]);
    assert!(!ok && err.contains("--seeds"), "{err}");
}
