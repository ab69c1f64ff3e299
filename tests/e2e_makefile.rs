//! The Makefile pipeline: its step order and command lines (dry run), the compare table, the pretrained branch on
//! the golden TensorFlow pickle, and the whole pipeline from IDX files to images with a tiny config.

mod common;
use clap::Parser;
use common::*;
use std::path::{Path, PathBuf};
use std::process::Output;

/// `make -C <repo> ARGS...` with the test's sg2 binary.
fn make(args: &[&str]) -> Output {
    std::process::Command::new("make")
        .arg("-C")
        .arg(root())
        .arg("--no-print-directory")
        .arg(format!("SG2={}", env!("CARGO_BIN_EXE_sg2")))
        .arg("SG2_FLAGS=--device cpu")
        .args(args)
        .output()
        .expect("run make")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

fn var(name: &str, value: &Path) -> String {
    format!("{name}={}", value.display())
}

/// The sg2 command lines of a dry run, as argument vectors starting with "sg2" (output redirections cut off).
fn sg2_lines(stdout: &str) -> Vec<Vec<String>> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix(SG2))
        .map(|rest| {
            let mut argv = vec!["sg2".to_string()];
            argv.extend(rest.split_whitespace().take_while(|w| !w.starts_with('>')).map(String::from));
            argv
        })
        .collect()
}

fn position(lines: &[Vec<String>], pred: impl Fn(&Vec<String>) -> bool) -> usize {
    lines.iter().position(pred).expect("step missing")
}

#[test]
fn dry_run_orders_the_steps_and_every_sg2_line_parses() {
    let dir = tempfile::tempdir().unwrap();
    let det = dir.path().join("detectors");
    std::fs::create_dir_all(&det).unwrap();
    std::fs::write(det.join("inception.pt"), b"x").unwrap();
    let out = dir.path().join("out");
    let pkl = golden("tiny32-tf.pkl");
    let o = make(&[
        "-n",
        &var("OUT", &out),
        &var("DETECTOR_DIR", &det),
        &var("PRETRAINED", &pkl),
        "SOURCE=/srv/sg2-e2e-source",
        "MAX_IMAGES=500",
        "KIMG=0.1",
        "SEEDS=1-3",
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    let lines = sg2_lines(&stdout);
    for argv in &lines {
        if let Err(e) = sg2::cli::Cli::try_parse_from(argv) {
            panic!("sg2 rejects `{}`:\n{e}", argv.join(" "));
        }
    }
    let sub =
        |l: &Vec<String>, s: &str| l.iter().skip(1).find(|w| !w.starts_with('-') && *w != "cpu") == Some(&s.into());
    let has = |l: &Vec<String>, w: &str| l.iter().any(|x| x == w);
    // Our network: dataset -> train -> {generate, metrics}.
    let dataset = position(&lines, |l| sub(l, "dataset-tool"));
    assert!(has(&lines[dataset], "create_mnist") && has(&lines[dataset], "500"), "{:?}", lines[dataset]);
    assert!(has(&lines[dataset], "data/sg2-e2e-source-32"), "DATA defaults from SOURCE and RESOLUTION");
    let train = position(&lines, |l| sub(l, "train"));
    assert!(lines[train].windows(2).any(|w| w == ["--kimg", "0.1"]), "{:?}", lines[train]);
    assert!(!has(&lines[train], "--resume"), "a fresh run does not resume");
    let ours = out.join("ours/network-final.safetensors").display().to_string();
    let pre = out.join("pretrained/network-final.safetensors").display().to_string();
    let gen_ours = position(&lines, |l| sub(l, "generate") && has(l, &ours));
    let met_ours = position(&lines, |l| sub(l, "metrics") && has(l, &ours));
    assert!(dataset < train && train < gen_ours && train < met_ours);
    assert!(lines[gen_ours].windows(2).any(|w| w == ["--seeds", "1-3"]));
    // Pretrained: import (the pickle itself, no Python step) -> {generate, metrics}.
    assert!(!stdout.contains("python"), "{stdout}");
    let import = position(&lines, |l| sub(l, "import"));
    assert!(has(&lines[import], pkl.to_str().unwrap()) && has(&lines[import], &pre), "{:?}", lines[import]);
    let gen_pre = position(&lines, |l| sub(l, "generate") && has(l, &pre));
    let met_pre = position(&lines, |l| sub(l, "metrics") && has(l, &pre));
    assert!(import < gen_pre && import < met_pre);
    assert_eq!(lines.len(), 7, "{lines:?}");
}

#[test]
fn without_detectors_metrics_are_skipped_with_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let det = dir.path().join("none");
    let o = make(&["-n", &var("OUT", &dir.path().join("out")), &var("DETECTOR_DIR", &det)]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    let lines = sg2_lines(&stdout);
    assert!(lines.iter().all(|l| !l.contains(&"metrics".to_string())), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains(&"generate".to_string())), "{lines:?}");
    let note = format!("metrics skipped (fid50k_full,ppl2_wend): no detector files in {}", det.display());
    assert!(stdout.contains(&note), "{stdout}");
}

#[test]
fn compare_prints_both_networks_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    for (net, body) in [
        ("ours", "network-final time 45m 18s fid50k_full 35.4571\nnetwork-final time 2m 01s ppl2_wend 150.2\n"),
        ("pretrained", "some other line\nnetwork-final time 1h 02m 03s fid50k_full 6.9300\n"),
    ] {
        std::fs::create_dir_all(out.join(net)).unwrap();
        std::fs::write(out.join(net).join("metrics.txt"), body).unwrap();
    }
    let o = make(&["-s", "compare", &var("OUT", out)]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    let rows: Vec<Vec<&str>> = stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        vec![
            vec!["metric", "ours", "pretrained"],
            vec!["fid50k_full", "35.4571", "6.9300"],
            vec!["ppl2_wend", "150.2", "-"],
        ]
    );
    let o = make(&["-s", "compare", &var("OUT", &out.join("empty"))]);
    assert!(text(&o).0.contains("(no metrics yet)"));
}

/// The pretrained branch on the golden TF pickle reproduces the reference images of its seeds.
#[test]
fn pretrained_branch_reproduces_the_official_images() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let args = [var("OUT", &out), var("PRETRAINED", &golden("tiny32-tf.pkl")), "SEEDS=6600-6605".into()];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = make(&[&["-j2", &format!("{}/pretrained/grid.png", out.display())][..], &args].concat());
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    let pre = out.join("pretrained");
    for f in ["network-final.safetensors", "grid.png"] {
        assert!(pre.join(f).is_file(), "{f} missing");
    }
    let ckpt = sg2::model::checkpoint::load(&pre.join("network-final.safetensors")).unwrap();
    assert!(ckpt.has("G_ema") && ckpt.has("D"));
    let imgs: Vec<tch::Tensor> = (6600..=6605)
        .map(|s| {
            let img = image::open(pre.join(format!("images/seed{s:04}.png"))).unwrap().to_rgb8();
            tch::Tensor::from_slice(img.as_raw()).reshape([1, 32, 32, 3])
        })
        .collect();
    // Golden seeds are [0, 1, 6600..6605]; the Makefile's default truncation is 0.5 with stored noise.
    let reference = golden_io("tiny32")["uint8_const_psi0.5"].narrow(0, 2, 6);
    assert_uint8_match("pretrained seeds 6600-6605", &tch::Tensor::cat(&imgs, 0), &reference);
    // Up to date: a second run does nothing.
    let o = make(&[&["-q", &format!("{}/pretrained/grid.png", out.display())][..], &args].concat());
    assert!(o.status.success(), "make -q: not up to date");
}

/// The whole pipeline with a tiny config: IDX files -> dataset -> train -> generate (metrics skipped without
/// detectors), the pretrained branch beside it, then the compare table; a second run does no work.
#[test]
fn whole_pipeline_with_a_tiny_config() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("idx");
    data::make_idx(&src, 64, true);
    let out = dir.path().join("out");
    let data = dir.path().join("data");
    let args = [
        var("OUT", &out),
        var("DATA", &data),
        var("SOURCE", &src),
        var("DETECTOR_DIR", &dir.path().join("none")),
        var("PRETRAINED", &golden("tiny32-tf.pkl")),
        "KIMG=0.064".into(),
        "SEEDS=0-3".into(),
        "TRAIN_ARGS=--set logging.tick_kimg=0.016 --set logging.image_snapshot_ticks=1 --set logging.snapshot_ticks=2"
            .into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = make(&[&["-j2"][..], &args].concat());
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(data.join("manifest.json").is_file());
    assert!(stdout.contains("metrics skipped"), "{stdout}");
    assert!(stdout.contains("(no metrics yet)"), "{stdout}");
    for net in ["ours", "pretrained"] {
        let d = out.join(net);
        let ckpt = sg2::model::checkpoint::load(&d.join("network-final.safetensors")).unwrap();
        assert!(ckpt.has("G_ema"), "{net}");
        assert!(d.join("grid.png").is_file(), "{net}");
        for s in 0..4 {
            assert!(d.join(format!("images/seed{s:04}.png")).is_file(), "{net}: seed {s}");
        }
    }
    // Training moved the generator: the last fakes grid differs from the first.
    let run = std::fs::read_dir(out.join("runs")).unwrap().map(|e| e.unwrap().path()).find(|p| p.is_dir()).unwrap();
    let mut fakes: Vec<PathBuf> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("fakes"))
        .collect();
    fakes.sort();
    assert!(fakes.len() >= 2, "{fakes:?}");
    let init = fakes.iter().find(|p| p.to_str().unwrap().contains("init")).unwrap_or(&fakes[0]);
    let last = fakes.iter().rfind(|p| *p != init).unwrap();
    let (a, b) = (image::open(init).unwrap().to_luma8(), image::open(last).unwrap().to_luma8());
    assert_eq!(a.dimensions(), b.dimensions());
    let mean_diff = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (*x as f64 - *y as f64).abs()).sum::<f64>()
        / a.as_raw().len() as f64;
    assert!(mean_diff > 1.0, "fakes grid barely changed: mean |diff| {mean_diff}");
    // Nothing left to do on a second run.
    let o = make(&[&["-n"][..], &args].concat());
    let lines = sg2_lines(&text(&o).0);
    assert!(lines.is_empty(), "{lines:?}");
}
