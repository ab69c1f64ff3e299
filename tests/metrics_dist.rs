//! `sg2 metrics --nproc-per-node 2`: two worker processes share the generated images, the reals and the PPL samples,
//! and give the values one process gives (test detectors, the tiny32 golden network, a small dataset); rank 0
//! alone prints, appends the JSONL and writes the statistics cache.

mod common;

use common::metrics::*;
use common::*;
use std::path::Path;

/// Every metric kind: 20 generated images / PPL samples in batches of 8 (3 batches: rank 0 computes the first,
/// rank 1 the other two) against 30 reals (4 batches).
const METRICS: &str = "fid50k_full,kid50k_full,pr50k3_full,is50k,ppl_zfull,ppl2_wend";

fn args<'a>(net: &'a Path, ds: &'a Path, det: &'a Path, metrics: &'a str, nproc: &'a str) -> Vec<&'a str> {
    let head = ["--device", "cpu", "--threads", "1", "metrics", "--network", s(net), "--data", s(ds)];
    let rest = ["--metrics", metrics, "--num-gen", "20", "--num-real", "30", "--batch", "8", "--detector-dir", s(det)];
    [&head[..], &rest, &["--nproc-per-node", nproc]].concat()
}

/// The printed lines without their times: (label, name, value as printed).
fn lines(stdout: &str) -> Vec<(String, String, String)> {
    stdout
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[f.len() - 2].to_string(), f[f.len() - 1].to_string())
        })
        .collect()
}

/// Every `metric-*.jsonl` in `dir`: (result name, full-precision value, num_gpus) of each line.
fn jsonl_values(dir: &Path) -> Vec<(String, f64, u64)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("metric-"))
        .collect();
    files.sort();
    let mut out = vec![];
    for f in files {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let j: serde_json::Value = serde_json::from_str(line).unwrap();
            for (k, v) in j["results"].as_object().unwrap() {
                out.push((k.clone(), v.as_f64().unwrap(), j["num_gpus"].as_u64().unwrap()));
            }
        }
    }
    out
}

fn cache_files(home: &Path) -> Vec<(std::path::PathBuf, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(home.join("cache"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let t = std::fs::metadata(&p).unwrap().modified().unwrap();
            (p, t)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn two_processes_give_one_process_values_and_only_rank_0_writes() {
    let dir = tempfile::tempdir().unwrap();
    let det = dir.path().join("det");
    make_detectors(&det);
    let ds = dataset(&dir.path().join("data"), 0, 30);
    // One folder per run: each gets its own JSONL beside the network and its own statistics cache.
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let (net1, net2) = (import_golden("tiny32", &one), import_golden("tiny32", &two));
    let (home1, home2) = (one.join("home"), two.join("home"));

    let (ok, out1, err) = run_sg2_env(&args(&net1, &ds, &det, METRICS, "1"), &[("SG2_HOME", &home1)]);
    assert!(ok, "{err}");
    let (ok, out2, err) = run_sg2_env(&args(&net2, &ds, &det, METRICS, "2"), &[("SG2_HOME", &home2)]);
    assert!(ok, "{err}");

    // The same lines (rank 1 prints nothing), the same values to full precision within 1e-4 relative.
    let (l1, l2) = (lines(&out1), lines(&out2));
    assert_eq!(l1.len(), 8, "{out1}");
    assert_eq!(l1, l2, "one process:\n{out1}\ntwo processes:\n{out2}");
    let (v1, v2) = (jsonl_values(&one), jsonl_values(&two));
    assert_eq!(v1.len(), 8);
    assert_eq!(v1.len(), v2.len());
    for ((n1, a, g1), (n2, b, g2)) in v1.iter().zip(&v2) {
        assert_eq!(n1, n2);
        assert!((a - b).abs() <= 1e-4 * a.abs().max(1e-12), "{n1}: one process {a}, two {b}");
        assert_eq!((*g1, *g2), (1, 2), "{n1}: num_gpus");
    }
    // Distances are not all zero: the check compares real work.
    assert!(v1.iter().any(|(n, v, _)| n.starts_with("ppl_zfull") && *v > 0.0), "{v1:?}");

    // Rank 0 wrote the statistics cache once per set of statistics, as one process does.
    let files = cache_files(&home2);
    assert_eq!(files.len(), cache_files(&home1).len(), "{files:?}");
    // A second run reads it on both ranks (files untouched) and prints the same values.
    let (ok, out3, err) = run_sg2_env(&args(&net2, &ds, &det, "fid50k_full,kid50k_full", "2"), &[("SG2_HOME", &home2)]);
    assert!(ok, "{err}");
    assert_eq!(lines(&out3), l1[..2]);
    assert_eq!(cache_files(&home2), files);
}

#[test]
fn a_failing_worker_fails_the_launch() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(&dir.path().join("data"), 0, 8);
    let net = import_golden("tiny32", dir.path());
    // No detectors in the folder: every worker fails, the launcher exits with their status.
    let missing = dir.path().join("no-detectors");
    let (ok, out, err) = run_sg2(&args(&net, &ds, &missing, "fid50k_full", "2"));
    assert!(!ok);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("inception-2015-12-05"), "{err}");
}
