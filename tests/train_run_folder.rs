//! A run folder stays consistent across interruptions: the best snapshot survives resumes, a resumed run reads as
//! if it had not been interrupted (stats.jsonl, TensorBoard, tick numbers, stale temporary files), one trainer per
//! folder, and a snapshot is resumed only on its own dataset unless asked.

mod common;
use common::training::*;
use sg2::metrics::MetricResult;
use sg2::train::snapshot::{self, list_snapshots};
use sg2::train::tensorboard::{read_run_events, SummaryValue};
use sg2::train::{train, Resume, TrainOptions};
use std::path::Path;

fn opts(cfg: sg2::config::Config, data: &Path, out: &Path) -> TrainOptions {
    tch::set_num_threads(1);
    TrainOptions::new(cfg, "tiny", data, out)
}

fn stats(run: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.join("stats.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A metric that reports `values[i]` at the i-th snapshot it sees (lower is better).
fn scripted(values: Vec<f64>) -> sg2::train::train_loop::MetricsFn {
    let mut i = 0;
    Box::new(move |_, _| {
        let v = values[i.min(values.len() - 1)];
        i += 1;
        Ok(vec![MetricResult {
            name: "fid_t".into(),
            value: v,
            seconds: 0.0,
            metric: "fid_t".into(),
            higher_is_better: false,
        }])
    })
}

#[test]
fn the_best_snapshot_survives_a_resume() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 12);
    let out = dir.path().join("runs");
    let cfg = |kimg: &str| {
        tiny_config(&[
            &format!("training.total_kimg={kimg}"),
            "logging.keep_snapshots=1",
            "logging.metrics=[\"fid_t\"]",
        ])
    };
    // Snapshots at 4 and 12 images: 10.0, then the best, 9.02.
    let mut o = opts(cfg("0.012"), &data, &out);
    o.metrics = Some(scripted(vec![10.0, 9.02]));
    let first = train(o).unwrap();
    // Resumed: 20 and 28 images score worse (9.36, 9.5).
    let mut o = opts(cfg("0.028"), &data, &out);
    o.resume = Some(Resume::Latest);
    o.metrics = Some(scripted(vec![9.36, 9.5]));
    train(o).unwrap();
    let run = first.run_dir.unwrap();
    let left: Vec<u64> = list_snapshots(&run).into_iter().map(|(n, _)| n).collect();
    assert_eq!(left, vec![12, 28], "the best (12 images, 9.02) and the newest stay");
}

#[test]
fn a_resumed_run_reads_as_if_it_had_not_been_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 12);
    let out = dir.path().join("runs");
    let cfg = |kimg: &str| tiny_config(&[&format!("training.total_kimg={kimg}")]);
    let first = train(opts(cfg("0.028"), &data, &out)).unwrap();
    let run = first.run_dir.unwrap();
    // As if killed after the snapshot at 12 images: later records, events and snapshots exist, `latest` names the
    // one at 12, and a snapshot write was cut short.
    snapshot::write_latest(&run, &snapshot::snapshot_name(12)).unwrap();
    for n in [20, 28] {
        std::fs::remove_file(run.join(snapshot::snapshot_name(n))).unwrap();
    }
    let stale = run.join(".network-snapshot-000000_020.safetensors.4242.tmp");
    std::fs::write(&stale, vec![0u8; 1000]).unwrap();
    let mut o = opts(cfg("0.036"), &data, &out);
    o.resume = Some(Resume::Latest);
    train(o).unwrap();

    assert!(!stale.exists(), "stale temporary file removed");
    let recs = stats(&run);
    let nimg: Vec<u64> = recs.iter().map(|r| r["cur_nimg"].as_u64().unwrap()).collect();
    let ticks: Vec<u64> = recs.iter().map(|r| r["Progress/tick"].as_f64().unwrap() as u64).collect();
    assert_eq!(nimg, vec![4, 12, 20, 28, 36], "no record of discarded work, kimg never goes back");
    assert_eq!(ticks, vec![0, 1, 2, 3, 4], "tick numbers continue");
    // TensorBoard (sg2's reader with TensorBoard's purge rule): one value per step, increasing.
    let steps: Vec<i64> = read_run_events(&run)
        .unwrap()
        .iter()
        .filter(|e| e.summary.iter().any(|(t, v)| t == "Progress/kimg" && matches!(v, SummaryValue::Scalar(_))))
        .map(|e| e.step)
        .collect();
    assert_eq!(steps, vec![4, 12, 20, 28, 36]);
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("(2 later stats records discarded)") && log.contains("removed "), "{log}");

    // TensorBoard's own reader agrees.
    let script = r#"
import sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
acc.Reload()
print(" ".join(str(e.step) for e in acc.Scalars("Progress/kimg")))
"#;
    let out = std::process::Command::new(common::python()).arg("-c").arg(script).arg(&run).output().unwrap();
    assert!(out.status.success(), "TensorBoard's reader: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4 12 20 28 36");
}

#[test]
fn a_second_trainer_on_the_same_run_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 12);
    let out = dir.path().join("runs");
    let first = train(opts(tiny_config(&[]), &data, &out)).unwrap();
    let run = first.run_dir.unwrap();
    let _held = snapshot::RunLock::acquire(&run).unwrap();
    let mut o = opts(tiny_config(&["training.total_kimg=0.032"]), &data, &out);
    o.resume = Some(Resume::Latest);
    let err = format!("{:#}", train(o).unwrap_err());
    assert!(err.contains("in use by another sg2 train (pid "), "{err}");
}

#[test]
fn resuming_on_another_dataset_needs_permission() {
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(&dir.path().join("a"), 12);
    let small = tiny_dataset(&dir.path().join("b"), 5);
    let out = dir.path().join("runs");
    let first = train(opts(tiny_config(&[]), &data, &out)).unwrap();
    let snap = first.snapshot.unwrap();
    let runs_before = std::fs::read_dir(&out).unwrap().count();
    let mut o = opts(tiny_config(&["training.total_kimg=0.032"]), &small, &out);
    o.resume = Some(Resume::Path(snap.clone()));
    let err = format!("{:#}", train(o).unwrap_err());
    assert!(err.contains("trained on another dataset") && err.contains("--allow-dataset-change"), "{err}");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), runs_before, "no run folder made");
    let mut o = opts(tiny_config(&["training.total_kimg=0.032"]), &small, &out);
    o.resume = Some(Resume::Path(snap));
    o.allow_dataset_change = true;
    let rep = train(o).unwrap();
    assert_eq!(rep.cur_nimg, 32);
}
