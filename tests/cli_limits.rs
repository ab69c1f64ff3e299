//! Numbers from the command line and the manifest out of range: one line naming the option or field and the
//! problem, exit 1, at once (no huge allocation, no thread storm, no panic), and nothing written.

mod common;
use common::data::*;
use common::s;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Fails in one `error:` line that holds every string of `want`, without a panic.
fn refused(r: (bool, String, String), want: &[&str]) {
    let (ok, _, err) = r;
    assert!(!ok, "expected a failure, stderr: {err}");
    assert!(err.starts_with("error: ") && err.trim().lines().count() == 1, "one line: {err}");
    assert!(!err.contains("panicked") && !err.contains("Exception raised"), "{err}");
    for w in want {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
}

/// A 16x16 RGB dataset of `n` images made from PNGs.
fn small_dataset(root: &Path, n: usize) -> PathBuf {
    let src = root.join("pngs");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..n {
        std::fs::write(src.join(format!("{i:03}.png")), png(&picture(24, 20, 3, i))).unwrap();
    }
    let dest = root.join("ds");
    let mut o = sg2::data::create::CreateOptions::new(&dest, 16);
    (o.min_size, o.progress) = (0, false);
    sg2::data::create::create(&mut sg2::data::sources::images::Images::open(&src).unwrap(), &o).unwrap();
    dest
}

fn tiny32(dir: &Path) -> PathBuf {
    let g = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let out = dir.join("tiny32.safetensors");
    let (d, k) = (g.join("tiny32-D.safetensors"), g.join("tiny32-kwargs.json"));
    sg2::model::import::import(&g.join("tiny32-G.safetensors"), Some(&d), &k, &out).unwrap();
    out
}

#[test]
fn dataset_tool_options_are_checked_before_any_work() {
    let t = tempfile::tempdir().unwrap();
    let pngs = t.path().join("pngs");
    std::fs::create_dir_all(&pngs).unwrap();
    std::fs::write(pngs.join("a.png"), png(&picture(24, 20, 3, 0))).unwrap();
    let dest = t.path().join("out");
    let create = |extra: &[&str]| {
        let mut a = vec!["dataset-tool", "create_from_images", "--source", s(&pngs), "--dest", s(&dest), "--quiet"];
        a.extend_from_slice(extra);
        sg2(&a)
    };
    let start = Instant::now();
    refused(create(&["--resolution", "1048576"]), &["--resolution 1048576: must be a power of two from 4 to 8192"]);
    refused(create(&["--resolution", "16", "--max-images", "0"]), &["--max-images 0: must be >= 1"]);
    refused(create(&["--resolution", "16", "--shard-size-mb", "0"]), &["--shard-size-mb 0: must be from 1"]);
    refused(create(&["--resolution", "16", "--shard-size-mb", "99999999999"]), &["--shard-size-mb 99999999999"]);
    refused(create(&["--resolution", "16", "--threads", "0"]), &["--threads 0: must be >= 1"]);
    assert!(!dest.exists());
    // Thread counts far beyond the cores are bounded (and said so), not started.
    let (ok, _, err) = create(&["--resolution", "16", "--min-size", "0", "--workers", "100000", "--threads", "100000"]);
    assert!(ok, "{err}");
    assert!(err.contains("note: --threads 100000: using") && err.contains("note: --workers 100000: using"), "{err}");
    assert!(start.elapsed().as_secs() < 60, "took {:?}", start.elapsed());

    let lsun = t.path().join("lmdb");
    make_lmdb(&lsun, &[(lsun_key(0), webp(&picture(20, 20, 3, 0)))]);
    let wide = |w: &str, h: &str| {
        sg2(&[
            "dataset-tool",
            "create_lsun_wide",
            "--source",
            s(&lsun),
            "--dest",
            s(&t.path().join("w")),
            "--width",
            w,
            "--height",
            h,
        ])
    };
    refused(wide("16", "0"), &["--height 0: must be from 1 to --width 16"]);
    refused(wide("16", "20"), &["--height 20"]);
}

#[test]
fn inspection_options_and_a_damaged_manifest() {
    let t = tempfile::tempdir().unwrap();
    let ds = small_dataset(t.path(), 3);
    let out = t.path().join("x");
    refused(sg2(&["dataset-tool", "extract", s(&ds), "--dest", s(&out), "--max-images", "0"]), &["--max-images 0"]);
    refused(
        sg2(&["dataset-tool", "grid", s(&ds), "--out", s(&t.path().join("g.png")), "--count", "0"]),
        &["--count 0"],
    );

    // records_per_shard: 0 divided every record lookup by zero; every command now refuses the manifest on open.
    let manifest = ds.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&text).unwrap();
    for (field, value, want) in [
        ("records_per_shard", serde_json::json!(0), "records_per_shard is 0"),
        ("resolution", serde_json::json!(1u64 << 40), "resolution 1099511627776 is not a power of two from 4 to 8192"),
        ("channels", serde_json::json!(2), "channels 2 is not 1 or 3"),
        ("num_classes", serde_json::json!(4_000_000_000u32), "num_classes 4000000000 is above"),
    ] {
        let saved = m[field].clone();
        m[field] = value;
        std::fs::write(&manifest, serde_json::to_string(&m).unwrap()).unwrap();
        for cmd in [
            vec!["dataset-tool", "info", s(&ds)],
            vec!["dataset-tool", "verify", s(&ds)],
            vec!["dataset-tool", "extract", s(&ds), "--dest", s(&out)],
            vec!["dataset-tool", "grid", s(&ds), "--out", s(&t.path().join("g.png"))],
        ] {
            refused(sg2(&cmd), &["manifest.json: invalid manifest: ", want]);
        }
        m[field] = saved;
    }
    std::fs::write(&manifest, text).unwrap();
    assert!(!out.exists());
}

#[test]
fn generation_and_metrics_options() {
    let t = tempfile::tempdir().unwrap();
    let net = tiny32(t.path());
    let out = t.path().join("out");
    let gen = |extra: &[&str]| {
        let mut a = vec!["--device", "cpu", "generate", "--network", s(&net), "--seeds", "0-1", "--outdir", s(&out)];
        a.extend_from_slice(extra);
        sg2(&a)
    };
    refused(gen(&["--batch", "0"]), &["--batch 0: must be from 1 to 1024"]);
    refused(gen(&["--batch", "100000"]), &["--batch 100000"]);
    refused(gen(&["--trunc", "inf"]), &["--trunc inf: must be a finite number"]);
    let (ok, _, err) = gen(&["--trunc", "5"]);
    assert!(ok && err.contains("warning: --trunc 5: far outside"), "{err}");

    // 5001 x 5001 tiles of 32x32: refused with the size and the limit, before anything is generated.
    let fig = t.path().join("mix.png");
    let start = Instant::now();
    let mix = sg2(&[
        "--device",
        "cpu",
        "style-mix",
        "--network",
        s(&net),
        "--rows",
        "0-5000",
        "--cols",
        "0-5000",
        "--out",
        s(&fig),
    ]);
    refused(
        mix,
        &["--rows/--cols: the output would be 160064x160064 pixels x 3 channels = 76.9 GB", "limit of 1.1 GB"],
    );
    assert!(start.elapsed().as_secs() < 30 && !fig.exists());
    let walk = sg2(&["--device", "cpu", "interpolate", "--network", s(&net), "--seeds", "0-9", "--frames", "100000"]);
    refused(walk, &["--seeds/--frames: the output would be 1000000 images of 32x32"]);

    let ds = small_dataset(t.path(), 2);
    let metrics = |extra: &[&str]| {
        let mut a = vec!["--device", "cpu", "metrics", "--network", s(&net), "--data", s(&ds), "--no-cache"];
        a.extend_from_slice(extra);
        sg2(&a)
    };
    refused(metrics(&["--batch", "0"]), &["--batch 0"]);
    refused(metrics(&["--num-gen", "0"]), &["--num-gen 0: must be from 1 to 10000000"]);
    refused(metrics(&["--num-real", "99999999999"]), &["--num-real 99999999999"]);
    refused(metrics(&["--trunc", "nan"]), &["--trunc NaN: must be a finite number"]);
    refused(metrics(&["--metrics", "fid50k_full,,kid50k_full"]), &["fid50k_full,,kid50k_full: an empty name"]);
    let rank = sg2(&["metrics", "--real", s(&ds), "--fake", s(&ds), "--rank", s(&t.path().join("r.tsv")), "--k", "0"]);
    refused(rank, &["--k 0: must be >= 1"]);
    refused(sg2(&["bench", "loader", "--batch", "0"]), &["--batch 0"]);
    refused(sg2(&["bench", "dataset", "--resolution", "1048576"]), &["--resolution 1048576"]);
}

/// Output paths, special files, launcher flags and the options that override config keys: refused up front by
/// the name the user gave, with nothing written.
#[test]
fn outputs_overrides_and_special_files_are_checked_before_any_work() {
    let t = tempfile::tempdir().unwrap();
    let net = tiny32(t.path());
    let (out, file) = (t.path().join("out"), t.path().join("file.txt"));
    std::fs::write(&file, b"x").unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let gen = |extra: &[&str]| {
        let mut a = vec!["--device", "cpu", "generate", "--network", s(&net), "--seeds", "0-1"];
        a.extend_from_slice(extra);
        sg2(&a)
    };
    refused(gen(&["--outdir", s(&out), "--grid", s(&out)]), &[&format!("--grid {}: is a folder", out.display())]);
    let under_file = file.join("g.png");
    refused(gen(&["--outdir", s(&out), "--grid", s(&under_file)]), &["file.txt is a file, not a folder"]);
    refused(gen(&["--outdir", s(&file)]), &["file.txt: is a file, not a folder"]);
    refused(gen(&["--outdir", s(&out), "--trunc", "1e39"]), &["--trunc 1e39: must be from -100 to 100"]);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing generated");
    let mix =
        sg2(&["--device", "cpu", "style-mix", "--network", s(&net), "--rows", "0", "--cols", "1", "--out", s(&out)]);
    refused(mix, &["--out", "is a folder"]);
    let imp = sg2(&["import", "--g", s(&net), "--kwargs", s(&net), "--out", s(&under_file)]);
    refused(imp, &["--out", "file.txt is a file, not a folder"]);

    // A projected w that is empty or not finite.
    for (name, w) in [
        ("empty.npz", tch::Tensor::zeros([0, 8, 64], (tch::Kind::Float, tch::Device::Cpu))),
        ("nan.npz", tch::Tensor::full([1, 8, 64], f64::NAN, (tch::Kind::Float, tch::Device::Cpu))),
        ("huge.npz", tch::Tensor::full([1, 8, 64], 3e38, (tch::Kind::Float, tch::Device::Cpu))),
    ] {
        let p = t.path().join(name);
        sg2::npz::write_npz(&p, &[("w", &w)]).unwrap();
        let pw = t.path().join("pw");
        let r = sg2(&["--device", "cpu", "generate", "--network", s(&net), "--projected-w", s(&p), "--outdir", s(&pw)]);
        let want = match name {
            "nan.npz" => "NaN or infinite",
            "huge.npz" => "w 0 drives the network to non-finite values (largest |w| 3.000e38)",
            _ => "holds no vectors",
        };
        refused(r, &[name, want]);
        assert!(!pw.exists(), "no empty output folder");
    }
    let proj =
        sg2(&["project", "--network", s(&net), "--target", s(&file), "--num-steps", "100000000", "--outdir", s(&out)]);
    refused(proj, &["--num-steps 100000000: must be from 1 to 100000"]);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing written");

    // Options that stand for config keys are named as given; /dev/zero is not read.
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/fmnist32.toml");
    let train = |extra: &[&str]| {
        let mut a = vec!["train", "--config", s(&config), "--data", s(&out), "--outdir", s(&out)];
        a.extend_from_slice(extra);
        sg2(&a)
    };
    refused(train(&["--resolution", "48"]), &["--resolution 48: model.resolution = 48: must be a power of two"]);
    refused(train(&["--kimg", "nan"]), &["--kimg NaN: training.total_kimg = NaN: must be a finite number"]);
    refused(train(&["--set", "training.batch=0"]), &["--set training.batch=0: training.batch = 0"]);
    refused(train(&["--node-rank", "5"]), &["--node-rank 5 must be below --nnodes 1"]);
    refused(train(&["--nproc-per-node", "0"]), &["--nproc-per-node 0: must be >= 1"]);
    refused(sg2(&["info", "--config", "/dev/zero", "--config-only"]), &["/dev/zero: over 1048576 bytes"]);
    let bench = sg2(&["bench", "train", "--config", s(&config), "--batch", "0"]);
    refused(bench, &["--batch 0: training.batch = 0"]);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "nothing written");

    let wide = sg2(&[
        "dataset-tool",
        "create_lsun_wide",
        "--source",
        s(&out),
        "--dest",
        s(&t.path().join("w")),
        "--width",
        "48",
        "--height",
        "36",
    ]);
    refused(wide, &["--width 48: must be a power of two"]);

    // Outputs that are inputs.
    let same = sg2(&["import", "--g", s(&net), "--kwargs", s(&file), "--out", s(&net)]);
    refused(same, &["--out", "would overwrite"]);
    let ds = small_dataset(t.path(), 2);
    let manifest = ds.join("manifest.json");
    let before = std::fs::read(&manifest).unwrap();
    refused(sg2(&["dataset-tool", "grid", s(&ds), "--out", s(&manifest)]), &["would overwrite"]);
    refused(sg2(&["dataset-tool", "extract", s(&ds), "--dest", s(&ds)]), &["--dest", "would overwrite"]);
    let png = t.path().join("a.png");
    let aug = sg2(&["dataset-tool", "augment", s(&ds), "--out", s(&png), "--tensor-out", s(&png), "--count", "2"]);
    refused(aug, &["--tensor-out", "would overwrite"]);
    assert_eq!(std::fs::read(&manifest).unwrap(), before);
    assert!(!png.exists());
}

/// An image output's extension names its format (.png or .jpg; .gif for animations), checked before any work; a
/// sheet asking for more images than a dataset holds shows them all, with a note.
#[test]
fn image_outputs_follow_their_extension_and_small_datasets_are_shown_whole() {
    let t = tempfile::tempdir().unwrap();
    let ds = small_dataset(t.path(), 3);
    let decoded = |p: &Path, fmt: image::ImageFormat| {
        let bytes = std::fs::read(p).unwrap();
        assert_eq!(image::guess_format(&bytes).unwrap(), fmt, "{}", p.display());
        image::load_from_memory(&bytes).unwrap()
    };
    let jpg = t.path().join("sheet.JPG");
    let (ok, _, err) = sg2(&["dataset-tool", "grid", s(&ds), "--out", s(&jpg), "--count", "2"]);
    assert!(ok, "{err}");
    let img = decoded(&jpg, image::ImageFormat::Jpeg);
    assert_eq!((img.width(), img.height()), (32, 16));
    let bmp = t.path().join("sheet.bmp");
    refused(sg2(&["dataset-tool", "grid", s(&ds), "--out", s(&bmp)]), &["--out", "sheet.bmp", ".png or .jpg"]);
    let aug = sg2(&["dataset-tool", "augment", s(&ds), "--out", s(&t.path().join("a.webp"))]);
    refused(aug, &["--out", "a.webp", ".png or .jpg"]);

    // 3 images asked as 10: a 2x2 sheet of all three, as grid and augment both show it.
    for cmd in ["grid", "augment"] {
        let out = t.path().join(format!("{cmd}.png"));
        let (ok, _, err) = sg2(&["dataset-tool", cmd, s(&ds), "--out", s(&out), "--count", "10"]);
        assert!(ok, "{err}");
        assert!(err.contains(&format!("note: {} holds 3 images", ds.display())), "{err}");
        let img = decoded(&out, image::ImageFormat::Png);
        assert_eq!((img.width(), img.height()), (32, 32), "{cmd}");
    }

    let net = tiny32(t.path());
    let mix = t.path().join("mix.jpeg");
    let (ok, _, err) =
        sg2(&["--device", "cpu", "style-mix", "--network", s(&net), "--rows", "0", "--cols", "1", "--out", s(&mix)]);
    assert!(ok, "{err}");
    let img = decoded(&mix, image::ImageFormat::Jpeg);
    assert_eq!((img.width(), img.height()), (64, 64));
    let walk = t.path().join("walk.png");
    let r = sg2(&["--device", "cpu", "interpolate", "--network", s(&net), "--seeds", "0,1", "--out", s(&walk)]);
    refused(r, &["--out", "walk.png", "end the name in .gif"]);
    let out = t.path().join("gen");
    let grid = t.path().join("grid.tif");
    let r = sg2(&[
        "--device",
        "cpu",
        "generate",
        "--network",
        s(&net),
        "--seeds",
        "0",
        "--outdir",
        s(&out),
        "--grid",
        s(&grid),
    ]);
    refused(r, &["--grid", "grid.tif"]);
    assert!(!walk.exists() && !grid.exists() && !out.exists());
}

/// Options that only mean something with another are refused without it; a detector path that is a folder, or a
/// --detector-dir that is a file, is named for what it is.
#[test]
fn options_out_of_context_and_detector_paths_that_are_not_files() {
    let t = tempfile::tempdir().unwrap();
    let ds = small_dataset(t.path(), 2);
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/fmnist32.toml");
    let runs = t.path().join("runs");
    let (ok, _, err) =
        sg2(&["train", "--config", s(&config), "--data", s(&ds), "--outdir", s(&runs), "--allow-dataset-change"]);
    assert!(!ok && err.contains("--allow-dataset-change") && err.contains("--resume"), "{err}");
    assert!(!runs.exists());

    let det = t.path().join("det");
    std::fs::create_dir_all(det.join("inception-2015-12-05.pt")).unwrap();
    let metrics = |dir: &Path| {
        let a = ["--device", "cpu", "metrics", "--real", s(&ds), "--fake", s(&ds), "--no-cache"];
        sg2(&[&a[..], &["--detector-dir", s(dir)]].concat())
    };
    let folder = det.join("inception-2015-12-05.pt");
    refused(metrics(&det), &[&format!("{}: a folder, not a TorchScript detector file", folder.display())]);
    let file = t.path().join("det.txt");
    std::fs::write(&file, b"x").unwrap();
    refused(metrics(&file), &[&format!("--detector-dir {}: not a folder", file.display())]);
}
