//! `sg2 metrics` end to end with the test detectors (scripts/make_test_detectors.py): every metric on a checkpoint
//! against a dataset, the official output line and JSONL, the statistics cache, two-set comparison, ranking,
//! PPL of a constant generator, and the errors for missing or wrong detector files.

mod common;

use common::metrics::*;
use common::*;
use sg2::metrics::{self, MetricOptions};
use std::path::Path;

/// Parses `<label> time <t> <name> <value>` lines into (name, value).
fn parse_lines(label: &str, stdout: &str) -> Vec<(String, f64)> {
    stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f[0], label, "{l}");
            assert_eq!(f[1], "time", "{l}");
            let (name, value) = (f[f.len() - 2], f[f.len() - 1]);
            assert!(value.split_once('.').is_some_and(|(_, d)| d.len() == 4), "4 decimals: {l}");
            (name.to_string(), value.parse().unwrap())
        })
        .collect()
}

/// `sg2 metrics` on the network against the dataset with 20 generated and 30 real images.
fn metrics_args<'a>(net: &'a Path, ds: &'a Path, metrics: &'a str, det: &'a Path) -> Vec<&'a str> {
    let counts = ["--num-gen", "20", "--num-real", "30", "--batch", "8"];
    let head = ["--device", "cpu", "metrics", "--network", s(net), "--data", s(ds), "--metrics", metrics];
    [&head[..], &counts, &["--detector-dir", s(det)]].concat()
}

fn cache_files(home: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> =
        std::fs::read_dir(home.join("cache")).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    v.sort();
    v
}

#[test]
fn every_metric_on_a_network_prints_official_lines_appends_jsonl_and_caches_reals() {
    let dir = tempfile::tempdir().unwrap();
    let det = dir.path().join("det");
    make_detectors(&det);
    let home = dir.path().join("home");
    let ds = dataset(&dir.path().join("data"), 0, 30);
    let net = import_golden("tiny32", dir.path());
    let metrics = "fid50k_full,kid50k_full,pr50k3_full,is50k,ppl2_wend,ppl_zfull,ppl_wfull,ppl_zend,ppl_wend,fid50k";
    let args = metrics_args(&net, &ds, metrics, &det);
    let (ok, out, err) = run_sg2_env(&args, &[("SG2_HOME", &home)]);
    assert!(ok, "{err}");
    let got = parse_lines("tiny32", &out);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "fid20_r30",
            "kid20_r30",
            "pr20_3_r30_precision",
            "pr20_3_r30_recall",
            "is20_mean",
            "is20_std",
            "ppl2_wend_20",
            "ppl_zfull_20",
            "ppl_wfull_20",
            "ppl_zend_20",
            "ppl_wend_20",
            "fid20_r30"
        ]
    );
    let v = |n: &str| got.iter().find(|(k, _)| k == n).unwrap().1;
    assert!(v("fid20_r30") > 0.0);
    for n in ["pr20_3_r30_precision", "pr20_3_r30_recall"] {
        assert!((0.0..=1.0).contains(&v(n)), "{n}");
    }
    assert!(v("is20_mean") >= 1.0);
    assert!(v("ppl_zfull_20") > 0.0);
    // The same metric twice in one run gives the same number (seeded, cached reals).
    assert_eq!(got[0].1, got[11].1);
    // IS and PPL need no reals: without --data, the same values.
    let alone = ["--device", "cpu", "metrics", "--network", s(&net), "--metrics", "is50k,ppl_zfull", "--num-gen", "20"];
    let (ok, out, err) =
        run_sg2_env(&[&alone[..], &["--batch", "8", "--detector-dir", s(&det)]].concat(), &[("SG2_HOME", &home)]);
    assert!(ok, "{err}");
    let without = parse_lines("tiny32", &out);
    let v = |n: &str| got.iter().find(|(k, _)| k == n).unwrap().1;
    assert_eq!(without.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["is20_mean", "is20_std", "ppl_zfull_20"]);
    for (n, x) in &without {
        assert_eq!(*x, v(n), "{n}");
    }
    let fid_alone = ["--device", "cpu", "metrics", "--network", s(&net), "--metrics", "is50k,fid50k_full"];
    let (ok, _, err) = run_sg2_env(&fid_alone, &[("SG2_HOME", &home)]);
    assert!(!ok && err.contains("--metrics fid50k_full: compares with real images: give --data DATASET"), "{err}");
    // JSONL beside the network, one file per metric.
    let jl = std::fs::read_to_string(dir.path().join("metric-pr20_3_r30.jsonl")).unwrap();
    let j: serde_json::Value = serde_json::from_str(jl.lines().next().unwrap()).unwrap();
    assert_eq!(j["metric"], "pr20_3_r30");
    assert_eq!(j["snapshot_pkl"], "tiny32.safetensors");
    assert!((j["results"]["pr20_3_r30_recall"].as_f64().unwrap() - v("pr20_3_r30_recall")).abs() < 1e-4);
    assert!(dir.path().join("metric-fid20_r30.jsonl").is_file());

    // Second run: the real statistics come from the cache (files untouched), the numbers are identical.
    let files = cache_files(&home);
    assert_eq!(files.len(), 3, "{files:?}"); // inception mean/cov (FID), inception all (KID), vgg16 all (PR)
    let mtimes: Vec<_> = files.iter().map(|f| std::fs::metadata(f).unwrap().modified().unwrap()).collect();
    let args2 = metrics_args(&net, &ds, "fid50k_full,kid50k_full", &det);
    let (ok, out2, err) = run_sg2_env(&args2, &[("SG2_HOME", &home)]);
    assert!(ok, "{err}");
    let again = parse_lines("tiny32", &out2);
    assert_eq!(again[0], got[0]);
    assert_eq!(again[1], got[1]);
    assert_eq!(cache_files(&home), files);
    let mtimes2: Vec<_> = files.iter().map(|f| std::fs::metadata(f).unwrap().modified().unwrap()).collect();
    assert_eq!(mtimes, mtimes2);
    assert_eq!(std::fs::read_to_string(dir.path().join("metric-fid20_r30.jsonl")).unwrap().lines().count(), 3);

    // A changed dataset has another fingerprint: new statistics, another FID.
    std::fs::remove_dir_all(dir.path().join("data")).unwrap();
    let ds2 = dataset(&dir.path().join("data"), 100, 30);
    assert_eq!(ds2, ds);
    let (ok, out3, err) = run_sg2_env(&args2, &[("SG2_HOME", &home)]);
    assert!(ok, "{err}");
    let third = parse_lines("tiny32", &out3);
    assert_ne!(third[0].1, got[0].1);
    assert_eq!(cache_files(&home).len(), files.len() + 2);
}

#[test]
fn identical_sets_give_zero_fid_and_ranking_puts_copies_first() {
    let dir = tempfile::tempdir().unwrap();
    let det = dir.path().join("det");
    make_detectors(&det);
    let home = dir.path().join("home");
    let ds = dataset(&dir.path().join("data"), 0, 24);
    let folder = dir.path().join("data/src");
    // Dataset vs itself and the image folder it was made from (same pixels): FID 0, KID about 0.
    for real in [&ds, &folder] {
        let args = [
            "--device",
            "cpu",
            "metrics",
            "--real",
            s(real),
            "--fake",
            s(&ds),
            "--metrics",
            "fid,kid,pr",
            "--detector-dir",
            s(&det),
            "--batch",
            "5",
        ];
        let (ok, out, err) = run_sg2_env(&args, &[("SG2_HOME", &home)]);
        assert!(ok, "{err}");
        let got = parse_lines("ds", &out);
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["fid", "kid", "pr3_precision", "pr3_recall"]);
        assert!(got[0].1.abs() < 1e-3, "FID of identical sets {}", got[0].1);
        assert!(got[1].1.abs() < 0.05, "KID of identical sets {}", got[1].1);
        assert_eq!((got[2].1, got[3].1), (1.0, 1.0));
    }
    // A noise folder is far from the dataset.
    let noise = image_folder(&dir.path().join("noise"), 0, 12, 32, true);
    let args = ["--device", "cpu", "metrics", "--real", s(&ds), "--fake", s(&noise), "--detector-dir", s(&det)];
    let (ok, out, err) = run_sg2_env(&args, &[("SG2_HOME", &home)]);
    assert!(ok, "{err}");
    assert!(parse_lines("noise", &out)[0].1 > 1e-3);
    assert!(!err.contains("note:"), "same size and colour: {err}");
    // Sets of another size or colour are compared (the detectors resize), with a note that says so.
    let gray = dir.path().join("gray");
    std::fs::create_dir_all(&gray).unwrap();
    for i in 0..4u32 {
        let img = image::imageops::grayscale(&image::imageops::thumbnail(&test_image(i, 32, false), 16, 16));
        img.save(gray.join(format!("g{i}.png"))).unwrap();
    }
    let args = ["--device", "cpu", "metrics", "--real", s(&ds), "--fake", s(&gray), "--detector-dir", s(&det)];
    let (ok, out, err) = run_sg2_env(&args, &[("SG2_HOME", &home)]);
    assert!(ok, "{err}");
    assert!(parse_lines("gray", &out)[0].1 > 1e-3);
    let want = format!("note: {} holds 32x32 RGB images and {} 16x16 grayscale", ds.display(), gray.display());
    assert!(err.contains(&want), "{err}");
    // Names that need a network are refused before any set is read (no note first).
    let args = ["--device", "cpu", "metrics", "--real", s(&ds), "--fake", s(&gray), "--metrics", "fid,is50k"];
    let (ok, _, err) = run_sg2(&args);
    assert!(!ok && err.contains("\"is50k\" needs --network and --data") && !err.contains("note:"), "{err}");
    // --metrics has no meaning for a ranking.
    let args = ["metrics", "--real", s(&ds), "--fake", s(&gray), "--rank", "r.tsv", "--metrics", "kid"];
    let (ok, _, err) = run_sg2(&args);
    assert!(!ok && err.contains("--metrics") && err.contains("cannot be used with"), "{err}");

    // Ranking: candidates = 3 copies of reference images and 3 noise images; with k = 1 copies are at distance 0.
    let cands = dir.path().join("cands");
    image_folder(&cands, 3, 3, 32, false);
    for i in 0..3 {
        // A TAB in a name is escaped, so every row keeps its four fields.
        let name = if i == 2 { "junk\t2.png".to_string() } else { format!("junk{i}.png") };
        std::fs::copy(noise.join(format!("img{i:04}.png")), cands.join(name)).unwrap();
    }
    let tsv = dir.path().join("rank.tsv");
    let args = [
        "--device",
        "cpu",
        "metrics",
        "--real",
        s(&folder),
        "--fake",
        s(&cands),
        "--rank",
        s(&tsv),
        "--k",
        "1",
        "--detector-dir",
        s(&det),
    ];
    let (ok, out, err) = run_sg2_env(&args, &[("SG2_HOME", &home)]);
    assert!(ok, "{err}");
    assert!(out.is_empty(), "ranking prints nothing on stdout: {out}");
    let text = std::fs::read_to_string(&tsv).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split('\t').collect()).collect();
    assert_eq!(text.lines().next().unwrap(), "rank\tname\tknn1_distance\tinside_reference");
    assert_eq!(rows.len(), 6);
    assert!(rows.iter().any(|r| r[1] == "junk\\t2.png"), "{text}");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.len(), 4, "{r:?}");
        assert_eq!(r[0], (i + 1).to_string());
        let d: f64 = r[2].parse().unwrap();
        if i < 3 {
            assert!(r[1].starts_with("img") && d < 1e-2 && r[3] == "1", "{r:?}");
        } else {
            assert!(r[1].starts_with("junk") && d > 1e-2, "{r:?}");
        }
    }
}

#[test]
fn ppl_of_a_generator_that_ignores_its_input_is_zero() {
    let dir = tempfile::tempdir().unwrap();
    let det = dir.path().join("det");
    make_detectors(&det);
    let ds = dataset(&dir.path().join("data"), 0, 8);
    let net = import_golden("tiny32", dir.path());
    let mut opts = MetricOptions::new(tch::Device::Cpu);
    opts.detector_dir = Some(det.clone());
    opts.num_gen = Some(12);
    opts.batch = 4;
    opts.cache_dir = None;
    opts.seed = Some(0);
    let names: Vec<String> = ["ppl_zfull", "ppl_wend", "ppl2_wend"].iter().map(|s| s.to_string()).collect();
    let (_, vs, g) = sg2::model::checkpoint::load_generator(&net, tch::Device::Cpu).unwrap();
    let r = metrics::evaluate_generator(&g, &ds, &names, &opts).unwrap();
    assert!(r.iter().all(|m| m.value > 0.0), "{r:?}");
    // Zero every affine weight: styles no longer depend on w, so the image does not depend on z.
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            if name.ends_with("affine.weight") {
                let _ = t.zero_();
            }
        }
    });
    let r = metrics::evaluate_generator(&g, &ds, &names, &opts).unwrap();
    assert_eq!(r.iter().map(|m| m.value).collect::<Vec<_>>(), [0.0, 0.0, 0.0], "{r:?}");
    assert_eq!(r[0].name, "ppl_zfull_12");
}

#[test]
fn missing_or_wrong_detectors_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(&dir.path().join("data"), 0, 4);
    let net = import_golden("tiny32", dir.path());
    let det = dir.path().join("det");
    std::fs::create_dir_all(&det).unwrap();
    let run = |m: &str| {
        let args = [
            "--device",
            "cpu",
            "metrics",
            "--network",
            s(&net),
            "--data",
            s(&ds),
            "--metrics",
            m,
            "--num-gen",
            "4",
            "--detector-dir",
            s(&det),
        ];
        run_sg2_env(&args, &[("SG2_HOME", dir.path())])
    };
    let (ok, out, err) = run("fid50k_full");
    assert!(!ok && out.is_empty());
    let file = det.join("inception-2015-12-05.pt");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err
        .contains("https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt"));
    // Not a TorchScript file.
    std::fs::write(&file, b"not a model").unwrap();
    let (ok, _, err) = run("fid50k_full");
    assert!(!ok && err.contains(&file.display().to_string()) && err.contains("not a TorchScript file"), "{err}");
    // Another network under the official name: its output width gives it away.
    let other = dir.path().join("other");
    make_detectors(&other);
    std::fs::copy(other.join("vgg16.pt"), &file).unwrap();
    let (ok, _, err) = run("fid50k_full");
    assert!(!ok && err.contains("gives 4096 values per image") && err.contains("not the expected detector"), "{err}");
    // PPL needs vgg16.pt: its absence is named too.
    let (ok, _, err) = run("ppl2_wend");
    assert!(!ok && err.contains(&det.join("vgg16.pt").display().to_string()), "{err}");
    // Unknown metric names list the known ones.
    let (ok, _, err) = run("fid10");
    assert!(!ok && err.contains("unknown metric") && err.contains("fid50k_full"), "{err}");
}

/// The TF-era `fid50k` of a network trained mirrored reads the official x-flipped dataset (all records, then all
/// mirrored): the same value as `fid50k_full` on a dataset built from those 2N images. `_full` ignores the setting.
#[test]
fn tf_era_metrics_read_the_reals_x_flipped_when_the_network_was_trained_mirrored() {
    let dir = tempfile::tempdir().unwrap();
    let det = dir.path().join("det");
    make_detectors(&det);
    let home = dir.path().join("home");
    let ds = dataset(&dir.path().join("data"), 0, 12);
    let net = import_golden("tiny32", dir.path());
    // The x-flipped dataset by hand: img0000..0011, then their mirror images (names sort after).
    let both = dir.path().join("both");
    image_folder(&both, 0, 12, 32, false);
    for i in 0..12 {
        image::imageops::flip_horizontal(&test_image(i, 32, false))
            .save(both.join(format!("mirror{i:04}.png")))
            .unwrap();
    }
    let ds2 = dir.path().join("ds2");
    let mut o = sg2::data::create::CreateOptions::new(&ds2, 32);
    o.progress = false;
    o.min_size = 0;
    sg2::data::create::create(&mut sg2::data::sources::images::Images::open(&both).unwrap(), &o).unwrap();

    let run = |data: &Path, metric: &str, mirror: &str| -> f64 {
        let args = [
            "--device",
            "cpu",
            "metrics",
            "--network",
            s(&net),
            "--data",
            s(data),
            "--metrics",
            metric,
            "--num-gen",
            "16",
            "--num-real",
            "24",
            "--batch",
            "8",
            "--detector-dir",
            s(&det),
            "--mirror",
            mirror,
            "--no-cache",
        ];
        let (ok, out, err) = run_sg2_env(&args, &[("SG2_HOME", &home)]);
        assert!(ok, "{err}");
        parse_lines("tiny32", &out)[0].1
    };
    let flipped = run(&ds, "fid50k", "true");
    let by_hand = run(&ds2, "fid50k_full", "false");
    assert!((flipped - by_hand).abs() <= 1e-3 * by_hand.abs().max(1.0), "{flipped} vs {by_hand}");
    let plain = run(&ds, "fid50k", "false");
    assert!((plain - flipped).abs() > 1e-3, "mirroring changed nothing: {plain}");
    assert_eq!(run(&ds, "fid50k_full", "true"), run(&ds, "fid50k_full", "false"));
}

/// A dataset at `resolution` with `channels` from 32x32 test images.
fn dataset_at(root: &Path, n: u32, resolution: usize, channels: usize) -> std::path::PathBuf {
    let src = image_folder(&root.join("src"), 0, n, 32, false);
    let dest = root.join("ds");
    let mut o = sg2::data::create::CreateOptions::new(&dest, resolution);
    (o.progress, o.min_size, o.channels) = (false, 0, Some(channels));
    sg2::data::create::create(&mut sg2::data::sources::images::Images::open(&src).unwrap(), &o).unwrap();
    dest
}

/// The official tool refuses to score a network against unlike images; a larger dataset is compared through its
/// level at the network's resolution, and --num-real beyond the dataset is clamped, warned and named by the count.
#[test]
fn mismatched_datasets_are_refused_and_real_counts_are_what_was_used() {
    let dir = tempfile::tempdir().unwrap();
    let det = dir.path().join("det");
    make_detectors(&det);
    let home = dir.path().join("home");
    let net = import_golden("tiny32", dir.path());
    let run = |ds: &Path, real: &str| {
        let args = ["--device", "cpu", "metrics", "--network", s(&net), "--data", s(ds), "--num-gen", "8"];
        let more = ["--num-real", real, "--batch", "8", "--detector-dir", s(&det)];
        run_sg2_env(&[&args[..], &more].concat(), &[("SG2_HOME", &home)])
    };
    for (name, res, ch, want) in [
        ("small", 16, 3, "16x16 images (levels [16, 8, 4]), the network makes 32x32"),
        ("gray", 32, 1, "1-channel images, the network makes 3-channel images"),
    ] {
        let ds = dataset_at(&dir.path().join(name), 4, res, ch);
        let (ok, out, err) = run(&ds, "4");
        assert!(!ok && out.is_empty() && err.trim().lines().count() == 1, "{err}");
        assert!(err.contains(&format!("{}: {want}", ds.display())), "{err}");
    }
    let big = dataset_at(&dir.path().join("big"), 6, 64, 3);
    let (ok, out, err) = run(&big, "5000");
    assert!(ok, "{err}");
    assert!(err.contains("is 64x64; comparing with its 32x32 level"), "{err}");
    assert!(err.contains("warning: 5000 real images asked") && err.contains("holds 6: using 6"), "{err}");
    assert_eq!(parse_lines("tiny32", &out)[0].0, "fid8_r6");
    // fid50k caps the reals at 50k: with --num-gen alone on 6 images it reads all 6, and its name and value are
    // those of --num-real 6.
    let only_gen = |extra: &[&str]| {
        let args = ["--device", "cpu", "metrics", "--network", s(&net), "--data", s(&big), "--num-gen", "8"];
        let more = ["--metrics", "fid50k", "--batch", "8", "--detector-dir", s(&det)];
        let (ok, out, err) = run_sg2_env(&[&args[..], &more, extra].concat(), &[("SG2_HOME", &home)]);
        assert!(ok, "{err}");
        parse_lines("tiny32", &out).remove(0)
    };
    let capped = only_gen(&[]);
    assert_eq!(capped.0, "fid8_r6");
    assert_eq!(capped, only_gen(&["--num-real", "6"]));
}
