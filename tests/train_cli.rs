//! `sg2 train` on bad input: one clear line naming the path and the problem, exit status 1, nothing written.

mod common;
use common::training::*;
use common::*;

fn config_file(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("tiny.toml");
    std::fs::write(&p, tiny_config(&[]).to_toml()).unwrap();
    p
}

/// A fresh folder holding a tiny config and a dataset.
struct Setup {
    dir: tempfile::TempDir,
    cfg: std::path::PathBuf,
    data: std::path::PathBuf,
}

impl Setup {
    fn new(images: usize) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_file(dir.path());
        let data = tiny_dataset(dir.path(), images);
        Setup { dir, cfg, data }
    }

    /// `--config C --data D --outdir <outdir>`.
    fn args<'a>(&'a self, outdir: &'a std::path::Path) -> [&'a str; 6] {
        ["--config", s(&self.cfg), "--data", s(&self.data), "--outdir", s(outdir)]
    }
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
    let err = train_err(&["--config", c, "--data", d, "--outdir", r, "--set", "model.c_dim=5"]);
    let want = "10 classes but model.c_dim = 5 (set model.c_dim = 10 to train on its labels, or 0 to ignore them)";
    assert!(err.contains(want), "{err}");
    assert!(!runs.exists(), "nothing is written on bad input");
}

#[test]
fn bad_resume_paths_are_named_with_the_reason() {
    let setup = Setup::new(4);
    let dir = &setup.dir;
    let runs = dir.path().join("runs");
    let base = setup.args(&runs);
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
    assert!(err.contains(&format!("--resume: {}: holds no training state", imported.display())), "{err}");
    assert!(err.contains("with --init"), "{err}");
    let err = with(&["--resume", "latest"]);
    assert!(err.contains("--resume latest: no complete snapshot of a 'tiny-data' run under"), "{err}");
}

#[test]
fn a_cli_run_resumes_latest_in_its_folder() {
    let setup = Setup::new(8);
    let dir = &setup.dir;
    let runs = dir.path().join("runs");
    let base = setup.args(&runs);
    let (ok, out, err) = run_sg2(&[&["train"][..], &base, &["--kimg", "0.008", "--seed", "3"]].concat());
    assert!(ok, "{err}");
    assert!(out.contains("tick 0  kimg 0.004") && out.contains("Exiting..."), "{out}");
    let (ok, out, err) = run_sg2(&[&["train"][..], &base, &["--kimg", "0.012", "--resume", "latest"]].concat());
    assert!(ok, "{err}");
    assert!(out.contains("resuming from"), "{out}");
    let run = runs.join("00000-tiny-data");
    assert!(run.join("network-snapshot-000000_012.safetensors").is_file());
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 1);
    let (ok, out, _) = run_sg2(&[&["train"][..], &base, &["--kimg", "0.012", "--resume", "latest"]].concat());
    assert!(ok && out.contains("nothing to do"), "{out}");

    // A broken `latest` is named, with the newest snapshot that reads; no other run is continued instead.
    let again = |_: ()| run_sg2(&[&["train"][..], &base, &["--kimg", "0.016", "--resume", "latest"]].concat());
    let latest = run.join("latest");
    let newest = run.join("network-snapshot-000000_012.safetensors");
    let prev = run.join("network-snapshot-000000_008.safetensors");
    std::fs::write(&latest, "gone.safetensors").unwrap();
    let (ok, _, err) = again(());
    let want = format!("--resume latest: {}: names gone.safetensors, which is not there", latest.display());
    assert!(!ok && err.contains(&want), "{err}");
    assert!(err.contains(&format!("pass --resume {}", newest.display())), "{err}");
    std::fs::write(&latest, "network-snapshot-000000_012.safetensors").unwrap();
    let bytes = std::fs::read(&newest).unwrap();
    std::fs::write(&newest, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, _, err) = again(());
    assert!(!ok && err.contains(&format!("{}: truncated (", newest.display())), "{err}");
    assert!(err.contains(&format!("pass --resume {}", prev.display())), "{err}");
    assert_eq!(std::fs::read_dir(&runs).unwrap().count(), 1, "no new run folder");
}

/// `logging.metrics` runs at each snapshot on the given detectors: the values reach log.txt, stats.jsonl,
/// TensorBoard (`Metrics/<name>`) and `metric-<name>.jsonl` in the run folder, all the same number.
#[test]
fn metrics_run_at_snapshots_and_reach_tensorboard() {
    let setup = Setup::new(12);
    let dir = &setup.dir;
    let runs = dir.path().join("runs");
    let det = dir.path().join("detectors");
    common::metrics::make_detectors(&det);
    let base = setup.args(&runs);
    let sets = [
        "--kimg",
        "0.008",
        "--set",
        "logging.metrics=[\"fid50k_full\", \"is50k\", \"fid50k_full\"]",
        "--set",
        "logging.metrics_num_gen=10",
        "--set",
        "logging.metrics_num_real=10",
    ];
    // Without the detector files nothing starts.
    let none = dir.path().join("none");
    let err = train_err(&[&base[..], &sets, &["--detector-dir", none.to_str().unwrap()]].concat());
    assert!(err.contains("inception-2015-12-05.pt"), "{err}");
    assert!(!runs.exists());
    // Nor with a damaged one: the detectors are loaded before training.
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    for e in std::fs::read_dir(&det).unwrap() {
        let p = e.unwrap().path();
        std::fs::write(bad.join(p.file_name().unwrap()), b"not torchscript").unwrap();
    }
    let err = train_err(&[&base[..], &sets, &["--detector-dir", bad.to_str().unwrap()]].concat());
    assert!(err.contains("inception-2015-12-05.pt"), "{err}");
    assert!(!runs.exists());
    // Counts a metric cannot work with (IS needs 10 images) are refused before training, as `sg2 metrics` does.
    let few = ["--kimg", "0.004", "--set", "logging.metrics=[\"is50k\"]", "--set", "logging.metrics_num_gen=4"];
    let other = dir.path().join("other");
    let b2 = setup.args(&other);
    let err = train_err(&[&b2[..], &few, &["--detector-dir", det.to_str().unwrap()]].concat());
    assert!(err.contains("logging.metrics: is50k: needs at least 10 generated images, 4 asked"), "{err}");
    assert!(!other.exists());
    // A metric failing at a snapshot (a detector giving NaN) is a warning; the snapshot is still written.
    let nan = dir.path().join("nan");
    common::metrics::make_nan_detectors(&nan);
    let once = ["--kimg", "0.004", "--set", "logging.metrics=[\"fid50k_full\"]", "--set", "logging.metrics_num_gen=4"];
    let (ok, out, err) = run_sg2(&[&["train"][..], &b2, &once, &["--detector-dir", nan.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    assert!(out.contains("warning: network-snapshot-000000_004: metrics failed"), "{out}");
    assert!(other.join("00000-tiny-data/network-snapshot-000000_004.safetensors").is_file());

    let (ok, out, err) = run_sg2(&[&["train"][..], &base, &sets, &["--detector-dir", det.to_str().unwrap()]].concat());
    assert!(ok, "{err}");
    let run = runs.join("00000-tiny-data");
    let last: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(run.join("stats.jsonl")).unwrap().lines().last().unwrap())
            .unwrap();
    let fid = last["Metrics/fid10"].as_f64().unwrap_or_else(|| panic!("{last}"));
    let is = last["Metrics/is10_mean"].as_f64().unwrap_or_else(|| panic!("{last}"));
    assert!(fid.is_finite() && fid >= 0.0 && is >= 1.0 - 1e-6, "fid {fid} is {is}");
    assert!(out.contains(&format!("network-snapshot-000000_008 fid10 {fid:.4}")), "{out}");
    assert_eq!(out.matches("network-snapshot-000000_008 fid10").count(), 1, "named twice, computed once: {out}");
    let jsonl = std::fs::read_to_string(run.join("metric-fid10.jsonl")).unwrap();
    assert!(jsonl.contains("network-snapshot-000000_008.safetensors"), "{jsonl}");
    let events = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with("events.out.tfevents."))
        .unwrap();
    let tb: Vec<f32> = sg2::train::tensorboard::read_events(&events)
        .unwrap()
        .into_iter()
        .flat_map(|e| e.summary)
        .filter_map(|(tag, v)| match (tag.as_str(), v) {
            ("Metrics/fid10", sg2::train::tensorboard::SummaryValue::Scalar(x)) => Some(x),
            _ => None,
        })
        .collect();
    // One value per snapshot, in TensorBoard and in the JSONL file alike; the last is the final network's.
    assert_eq!(tb.len(), jsonl.lines().count(), "{tb:?}\n{jsonl}");
    assert_eq!(tb.last(), Some(&(fid as f32)));
}

/// Ctrl-C (SIGINT) stops a run after the step under way with a snapshot that `--resume latest` continues from;
/// the exit status is 130.
#[test]
fn ctrl_c_writes_a_snapshot_that_resumes() {
    use std::io::BufRead;
    let setup = Setup::new(8);
    let dir = &setup.dir;
    let runs = dir.path().join("runs");
    let base = setup.args(&runs);
    let mut child = sg2_bin()
        .arg("train")
        .args(base)
        .args(["--kimg", "1000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = vec![];
    for line in lines.by_ref() {
        let line = line.unwrap();
        let started = line.starts_with("tick 0");
        seen.push(line);
        if started {
            break;
        }
    }
    assert!(seen.last().is_some_and(|l| l.starts_with("tick 0")), "{seen:?}");
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    let out = rest.join("\n");
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(out.contains("interrupted at kimg") && out.contains("--resume latest"), "{out}");
    let run = runs.join("00000-tiny-data");
    let latest = std::fs::read_to_string(run.join("latest")).unwrap();
    let snap = run.join(latest.trim());
    assert!(snap.is_file(), "{}", snap.display());
    let (_, st) = sg2::train::snapshot::load(&snap).unwrap();
    assert!(st.cur_nimg > 0 && st.cur_nimg < 1_000_000);

    let more = format!("{}", (st.cur_nimg + 8) as f64 / 1000.0);
    let (ok, out, err) = run_sg2(&[&["train"][..], &base, &["--kimg", &more, "--resume", "latest"]].concat());
    assert!(ok, "{err}");
    assert!(out.contains("resuming from") && out.contains("Exiting..."), "{out}");
}
