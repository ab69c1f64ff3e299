//! The training loop end to end through the library: files of a run, resume equivalence, rollback, retention with
//! metrics, and the phase schedule.

mod common;
use common::training::*;
use sg2::model::checkpoint::{load_generator, read_safetensors};
use sg2::train::loss::Phase;
use sg2::train::snapshot::{self, list_snapshots};
use sg2::train::tensorboard::{read_events, SummaryValue};
use sg2::train::{train, Resume, TrainOptions, Trainer};
use std::path::Path;

fn one_thread() {
    tch::set_num_threads(1);
}

fn opts(cfg: sg2::config::Config, data: &Path, out: &Path) -> TrainOptions {
    TrainOptions::new(cfg, "tiny", data, out)
}

fn stats_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("stats.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_short_run_writes_the_run_folder_with_finite_losses() {
    one_thread();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 20);
    let out = dir.path().join("runs");
    let rep = train(opts(tiny_config(&[]), &data, &out)).unwrap();
    let run = rep.run_dir.unwrap();
    assert_eq!(run, out.join("00000-tiny-data"));
    assert_eq!(rep.cur_nimg, 16);
    for f in ["config.toml", "log.txt", "stats.jsonl", "reals.png", "fakes_init.png", "latest"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    // Tick 0 ends after the first minibatch (4 images), then ticks of 8 images: 4, 12, 16 (the end).
    let snaps: Vec<u64> = list_snapshots(&run).into_iter().map(|(n, _)| n).collect();
    assert_eq!(snaps, vec![4, 12, 16]);
    for n in [4, 12, 16] {
        assert!(run.join(format!("fakes{}.png", snapshot::label(n))).is_file());
    }
    assert_eq!(std::fs::read_to_string(run.join("latest")).unwrap().trim(), "network-snapshot-000000_016.safetensors");
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("tick 0  kimg 0.004  time ") && log.contains("tick 2  kimg 0.016"), "{log}");
    let stats = stats_lines(&run);
    assert_eq!(stats.len(), 3);
    // Minibatch 0 runs all four phases, so the first record has every loss.
    for key in [
        "Loss/G/loss",
        "Loss/D/loss",
        "Loss/scores/real",
        "Loss/scores/fake",
        "Loss/r1_penalty",
        "Loss/pl_penalty",
        "Loss/pl_lengths",
    ] {
        let v = stats[0][key].as_f64().unwrap_or(f64::NAN);
        assert!(v.is_finite(), "{key} = {v}");
    }
    assert_eq!(stats[2]["Progress/kimg"].as_f64(), Some(0.016));
    assert_eq!(stats[2]["TrainG/learning_rate"].as_f64(), Some(0.002));
    // The snapshot generates through the common loader (G_ema) and holds optimizer state.
    let snap = run.join("network-snapshot-000000_016.safetensors");
    let (cfg, _vs, g) = load_generator(&snap, tch::Device::Cpu).unwrap();
    assert_eq!(cfg.model.resolution, 8);
    assert_eq!(g.img_resolution(), 8);
    let (tensors, _) = read_safetensors(&snap).unwrap();
    assert!(tensors.keys().any(|k| k.starts_with("opt_G.")) && tensors.keys().any(|k| k.starts_with("opt_D.")));
    assert!(tensors.contains_key("pl_mean"));
    let (_, st) = snapshot::load(&snap).unwrap();
    // Written at the end of tick 2: the state is the next tick's.
    assert_eq!((st.cur_nimg, st.batch_idx, st.cur_tick), (16, 4, 3));
    // TensorBoard: the official tags at step = images shown, values as in stats.jsonl, and the fakes grids.
    let tb: Vec<_> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("events.out.tfevents."))
        .collect();
    assert_eq!(tb.len(), 1);
    let events = read_events(&tb[0]).unwrap();
    let scalar = |tag: &str, step: i64| {
        events.iter().filter(|e| e.step == step).flat_map(|e| &e.summary).find_map(|(t, v)| match v {
            SummaryValue::Scalar(x) if t == tag => Some(*x as f64),
            _ => None,
        })
    };
    for tag in [
        "Loss/G/loss",
        "Loss/D/loss",
        "Loss/scores/real",
        "Loss/scores/fake",
        "Loss/signs/real",
        "Loss/signs/fake",
        "Loss/r1_penalty",
        "Loss/pl_penalty",
        "Loss/pl_lengths",
        "Progress/kimg",
        "Timing/sec_per_tick",
        "Timing/sec_per_kimg",
        "TrainG/learning_rate",
        "TrainD/learning_rate",
        "Train/r1_gamma",
        "Resources/cpu_mem_gb",
    ] {
        let v = scalar(tag, 4).unwrap_or_else(|| panic!("{tag} missing at step 4"));
        assert!((v - stats[0][tag].as_f64().unwrap()).abs() <= 1e-6 * v.abs().max(1.0), "{tag}");
    }
    assert_eq!(scalar("Progress/kimg", 16), Some(0.016f32 as f64));
    let images: Vec<i64> = events
        .iter()
        .filter(|e| {
            e.summary
                .iter()
                .any(|(t, v)| t == "fakes" && matches!(v, SummaryValue::Image { width: 32, height: 16, .. }))
        })
        .map(|e| e.step)
        .collect();
    assert_eq!(images, vec![0, 4, 12, 16]);
    // Training moved G_ema: the last grid differs from the first.
    let a = image::open(run.join("fakes_init.png")).unwrap().to_luma8();
    let b = image::open(run.join("fakes000000_016.png")).unwrap().to_luma8();
    assert_eq!(a.dimensions(), (32, 16));
    assert_ne!(a.as_raw(), b.as_raw());
}

/// Training N + M minibatches equals training N, stopping, resuming (latest) and training M more.
#[test]
fn resume_continues_exactly() {
    one_thread();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 10);
    // 9 minibatches of 4 cross an epoch of 10 images, two D and four G regularisation steps.
    let cfg = |kimg: &str| tiny_config(&[&format!("training.total_kimg={kimg}"), "training.mirror=true"]);
    let straight = train(opts(cfg("0.036"), &data, &dir.path().join("a"))).unwrap();
    let out_b = dir.path().join("b");
    let first = train(opts(cfg("0.020"), &data, &out_b)).unwrap();
    assert_eq!(first.cur_nimg, 20);
    let mut o = opts(cfg("0.036"), &data, &out_b);
    o.resume = Some(Resume::Latest);
    let resumed = train(o).unwrap();
    assert_eq!(resumed.run_dir, first.run_dir, "--resume latest continues in the same folder");
    let (a, _) = read_safetensors(straight.snapshot.as_ref().unwrap()).unwrap();
    let (b, _) = read_safetensors(resumed.snapshot.as_ref().unwrap()).unwrap();
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, ta) in &a {
        let diff = (ta.to_kind(tch::Kind::Double) - b[k].to_kind(tch::Kind::Double)).abs().max().double_value(&[]);
        assert!(diff <= 1e-6, "{k}: max |diff| {diff}");
    }
    let (_, sa) = snapshot::load(straight.snapshot.as_ref().unwrap()).unwrap();
    let (_, sb) = snapshot::load(resumed.snapshot.as_ref().unwrap()).unwrap();
    assert_eq!((sa.cur_nimg, sa.batch_idx, sa.loader), (sb.cur_nimg, sb.batch_idx, sb.loader));
    let log = std::fs::read_to_string(first.run_dir.unwrap().join("log.txt")).unwrap();
    assert!(log.contains("resuming from"), "log.txt is appended to");

    // Resuming a finished run does nothing.
    let mut o = opts(cfg("0.036"), &data, &out_b);
    o.resume = Some(Resume::Latest);
    let again = train(o).unwrap();
    assert!(again.run_dir.is_none() && again.snapshot.is_none());
}

#[test]
fn a_nan_is_repaired_as_the_official_by_default() {
    one_thread();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 12);
    let mut o = opts(tiny_config(&[]), &data, &dir.path().join("a"));
    o.inject_nan = Some((2, Phase::Gmain));
    let rep = train(o).unwrap();
    assert_eq!(rep.cur_nimg, 16);
    let run = rep.run_dir.unwrap();
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("warning: non-finite losses or gradients in tick 1 (Gmain 1)"), "{log}");
    // NaN gradients became 0: every weight is still finite.
    let (t, _) = read_safetensors(rep.snapshot.as_ref().unwrap()).unwrap();
    for (k, v) in &t {
        assert!(v.isfinite().all().int64_value(&[]) == 1, "{k} is not finite");
    }
}

#[test]
fn a_nan_stops_the_step_or_rolls_back() {
    one_thread();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 12);
    let mut o = opts(tiny_config(&["training.nan_policy=\"stop\""]), &data, &dir.path().join("a"));
    o.inject_nan = Some((2, Phase::Gmain));
    let err = format!("{:#}", train(o).unwrap_err());
    assert!(err.contains("tick 1: non-finite Loss/G/loss") && err.contains("phase Gmain"), "{err}");
    assert!(err.contains("training.nan_policy = \"rollback\""), "{err}");

    let cfg = tiny_config(&["training.nan_policy=\"rollback\"", "training.rollback_lr_factor=0.25"]);
    let mut o = opts(cfg, &data, &dir.path().join("b"));
    o.inject_nan = Some((2, Phase::Dmain));
    let rep = train(o).unwrap();
    assert_eq!(rep.rollbacks, 1);
    assert_eq!(rep.cur_nimg, 16);
    let run = rep.run_dir.unwrap();
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("rollback: reloaded") && log.contains("network-snapshot-000000_004"), "{log}");
    let (_, st) = snapshot::load(rep.snapshot.as_ref().unwrap()).unwrap();
    assert_eq!(st.lr_factor, 0.25);
    let stats = stats_lines(&run);
    assert_eq!(stats.last().unwrap()["TrainG/learning_rate"].as_f64(), Some(0.002 * 0.25));
}

#[test]
fn retention_keeps_the_last_k_and_the_best_by_metric() {
    one_thread();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 12);
    let cfg = tiny_config(&["training.total_kimg=0.032", "logging.keep_snapshots=2", "logging.metrics=[\"fid_test\"]"]);
    let mut o = opts(cfg, &data, &dir.path().join("runs"));
    let mut calls = 0;
    // The first snapshot scores best; later ones get worse.
    o.metrics = Some(Box::new(move |g, path| {
        assert_eq!(g.img_resolution(), 8);
        assert!(path.file_name().unwrap().to_str().unwrap().starts_with("network-snapshot-"));
        calls += 1;
        Ok(vec![metric("fid_test", calls as f64, false)])
    }));
    let rep = train(o).unwrap();
    let run = rep.run_dir.unwrap();
    let left: Vec<u64> = list_snapshots(&run).into_iter().map(|(n, _)| n).collect();
    assert_eq!(left, vec![4, 28, 32]);
    let stats = stats_lines(&run);
    assert_eq!(stats[0]["Metrics/fid_test"].as_f64(), Some(1.0));
    assert_eq!(stats.last().unwrap()["Metrics/fid_test"].as_f64(), Some(5.0));
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("network-snapshot-000000_004 fid_test 1.0000"), "{log}");
}

fn metric(name: &str, value: f64, higher_is_better: bool) -> sg2::metrics::MetricResult {
    sg2::metrics::MetricResult { name: name.into(), value, seconds: 0.0, metric: name.into(), higher_is_better }
}

#[test]
fn retention_keeps_the_best_of_a_higher_is_better_metric() {
    one_thread();
    let dir = tempfile::tempdir().unwrap();
    let data = tiny_dataset(dir.path(), 12);
    let cfg = tiny_config(&["training.total_kimg=0.032", "logging.keep_snapshots=1", "logging.metrics=[\"is_test\"]"]);
    let mut o = opts(cfg, &data, &dir.path().join("runs"));
    // Scores 1, 5, 2, 2, 2, ...: the second snapshot (kimg 0.012) is the best and must survive.
    let mut calls = 0;
    o.metrics = Some(Box::new(move |_, _| {
        calls += 1;
        Ok(vec![metric("is_test", [1.0, 5.0][..].get(calls - 1).copied().unwrap_or(2.0), true)])
    }));
    let rep = train(o).unwrap();
    let run = rep.run_dir.unwrap();
    let left: Vec<u64> = list_snapshots(&run).into_iter().map(|(n, _)| n).collect();
    assert_eq!(left, vec![12, 32]);
    // Each snapshot's state already knows its own score.
    let (_, st) = snapshot::load(&run.join(snapshot::snapshot_name(12))).unwrap();
    assert_eq!(st.best.as_ref().map(|b| (b.value, b.snapshot.clone())), Some((5.0, snapshot::snapshot_name(12))));
}

fn phases_at(cfg: &sg2::config::Config, i: u64) -> Vec<Phase> {
    let tr = Trainer::new(cfg, tch::Device::Cpu).unwrap();
    Trainer::phases_at(cfg, &tr.loss_settings(), i).into_iter().map(|(_, p)| p).collect()
}

#[test]
fn lazy_regularisation_runs_on_the_right_minibatches() {
    let cfg = tiny_config(&["training.g_reg_interval=4", "training.d_reg_interval=16"]);
    let all: Vec<Vec<Phase>> = (0..40).map(|i| phases_at(&cfg, i)).collect();
    let with = |p: Phase| -> Vec<u64> { (0..40).filter(|&i| all[i as usize].contains(&p)).collect() };
    assert_eq!(with(Phase::Greg), vec![0, 4, 8, 12, 16, 20, 24, 28, 32, 36]);
    assert_eq!(with(Phase::Dreg), vec![0, 16, 32]);
    assert_eq!(all[16], vec![Phase::Gmain, Phase::Greg, Phase::Dmain, Phase::Dreg]);
    assert_eq!(all[1], vec![Phase::Gmain, Phase::Dmain]);
    assert!(!phases_at(&tiny_config(&["training.pl_weight=0"]), 0).contains(&Phase::Greg));
    assert!(!phases_at(&tiny_config(&["training.r1_gamma=0"]), 0).contains(&Phase::Dreg));
    // Interval 0 is the official `None`: one phase per network doing both terms, every minibatch.
    let both = tiny_config(&["training.g_reg_interval=0", "training.d_reg_interval=0"]);
    assert_eq!(Trainer::run_phases(&both), vec![Phase::Gboth, Phase::Dboth]);
    assert!((0..5).all(|i| phases_at(&both, i) == vec![Phase::Gboth, Phase::Dboth]));
    let g_only = tiny_config(&["training.g_reg_interval=0"]);
    assert_eq!(phases_at(&g_only, 0), vec![Phase::Gboth, Phase::Dmain, Phase::Dreg]);
}

/// Separate G and D rates with schedules reach Adam, scaled by interval / (interval + 1) with betas ** ratio.
#[test]
fn learning_rate_schedules_reach_the_optimizers() {
    one_thread();
    let cfg = tiny_config(&[
        "training.g_lr=0.003",
        "training.d_lr_schedule=[[0, 0.004], [1, 0.002]]",
        "training.r1_gamma_schedule=[[0, 8], [1, 4]]",
        "training.g_reg_interval=4",
        "training.d_reg_interval=16",
    ]);
    let mut tr = Trainer::new(&cfg, tch::Device::Cpu).unwrap();
    tr.state.cur_nimg = 500;
    let reals = tch::Tensor::zeros([4, 1, 8, 8], (tch::Kind::Uint8, tch::Device::Cpu));
    tr.step(&reals, None).unwrap();
    let (g_ratio, d_ratio) = (4.0 / 5.0, 16.0 / 17.0);
    assert!((tr.opt_g.params.lr - 0.003 * g_ratio).abs() < 1e-12);
    assert!((tr.opt_d.params.lr - 0.003 * d_ratio).abs() < 1e-12, "{}", tr.opt_d.params.lr);
    assert!((tr.opt_g.params.beta2 - 0.99f64.powf(g_ratio)).abs() < 1e-12);
    assert_eq!(tr.opt_g.params.beta1, 0.0);
    assert!((tr.r1_gamma() - 6.0).abs() < 0.02, "{}", tr.r1_gamma());
}

/// Conditional fakes take their labels from the dataset's (the official loop samples dataset labels), so a class
/// the dataset lacks is never asked of G; without a pool the labels are uniform over `c_dim`.
#[test]
fn conditional_fakes_draw_labels_from_the_dataset() {
    let cfg = tiny_config(&["model.c_dim=4"]);
    let mut tr = Trainer::new(&cfg, tch::Device::Cpu).unwrap();
    tch::manual_seed(0);
    let uniform: Vec<i64> = Vec::try_from(tr.gen_labels(400)).unwrap();
    assert!(uniform.iter().all(|&l| (0..4).contains(&l)));
    assert!((0..4).all(|c| uniform.contains(&c)), "{uniform:?}");
    tr.label_pool = Some(tch::Tensor::from_slice(&[2i64, 2, 3, 2]));
    let drawn: Vec<i64> = Vec::try_from(tr.gen_labels(400)).unwrap();
    assert!(drawn.iter().all(|&l| l == 2 || l == 3), "{drawn:?}");
    let threes = drawn.iter().filter(|&&l| l == 3).count();
    assert!((50..150).contains(&threes), "about a quarter should be 3: {threes}");
}
