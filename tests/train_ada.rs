//! ADA in training: p follows the official heuristic from the signs of D's real logits, rises when D overfits a
//! tiny dataset, is exact across a resume, and a fixed p stays put.

mod common;
use common::training::*;
use sg2::model::checkpoint::read_safetensors;
use sg2::train::snapshot;
use sg2::train::{train, Resume, TrainOptions, Trainer};
use tch::{Device, Kind, Tensor};

fn opts(cfg: sg2::config::Config, data: &std::path::Path, out: &std::path::Path) -> TrainOptions {
    tch::set_num_threads(1);
    TrainOptions::new(cfg, "tiny", data, out)
}

#[test]
fn each_adjustment_is_the_official_step_in_the_direction_of_the_signs() {
    // interval 1, kimg 0.01, batch 4: each minibatch moves p by 4 / 10 = 0.4 (never below 0).
    let cfg = tiny_config(&[
        "augment.mode=\"ada\"",
        "augment.interval=1",
        "augment.kimg=0.01",
        "augment.target=0.5",
        "augment.p=0.5",
    ]);
    let mut tr = Trainer::new(&cfg, Device::Cpu).unwrap();
    let reals = Tensor::randint(256, [4, 1, 8, 8], (Kind::Uint8, Device::Cpu));
    let mut moved = 0;
    for _ in 0..6 {
        let p0 = tr.state.augment_p;
        tr.step(&reals, None).unwrap();
        // The tick statistics saw the same real logits as ADA did.
        let signs = tr.stats.take_means()["Loss/signs/real"];
        let dir = if signs > 0.5 {
            1.0
        } else if signs < 0.5 {
            -1.0
        } else {
            0.0
        };
        let want = (p0 + dir * 0.4).max(0.0);
        assert!((tr.state.augment_p - want).abs() < 1e-12, "p {p0} -> {} with mean sign {signs}", tr.state.augment_p);
        moved += (tr.state.augment_p != p0) as u32;
    }
    assert!(moved > 0);
    // A fixed p never moves.
    let cfg = tiny_config(&["augment.mode=\"fixed\"", "augment.p=0.3"]);
    let mut tr = Trainer::new(&cfg, Device::Cpu).unwrap();
    for _ in 0..3 {
        tr.step(&reals, None).unwrap();
    }
    assert_eq!(tr.state.augment_p, 0.3);
}

#[test]
fn p_rises_when_d_overfits_and_survives_a_resume_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // Four images: D soon tells them from fakes (E[sign(D(real))] above the target), so p must rise.
    let data = tiny_dataset(dir.path(), 4);
    let cfg = |kimg: &str| {
        tiny_config(&[
            &format!("training.total_kimg={kimg}"),
            "training.d_lr=0.01",
            "augment.mode=\"ada\"",
            "augment.interval=2",
            "augment.kimg=0.5",
            "augment.target=0.2",
        ])
    };
    let straight = train(opts(cfg("0.2"), &data, &dir.path().join("a"))).unwrap();
    let (_, st) = snapshot::load(straight.snapshot.as_ref().unwrap()).unwrap();
    assert!(st.augment_p > 0.05, "p stayed at {}", st.augment_p);
    let run = straight.run_dir.unwrap();
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.lines().any(|l| l.starts_with("tick ") && l.contains("  augment 0.")), "{log}");
    let stats = std::fs::read_to_string(run.join("stats.jsonl")).unwrap();
    assert!(stats.contains("\"Progress/augment\""));

    // The same run in two parts: identical p and weights.
    let out = dir.path().join("b");
    train(opts(cfg("0.1"), &data, &out)).unwrap();
    let mut o = opts(cfg("0.2"), &data, &out);
    o.resume = Some(Resume::Latest);
    let resumed = train(o).unwrap();
    let (_, sb) = snapshot::load(resumed.snapshot.as_ref().unwrap()).unwrap();
    assert_eq!((st.augment_p, st.ada_signs), (sb.augment_p, sb.ada_signs));
    let (a, _) = read_safetensors(straight.snapshot.as_ref().unwrap()).unwrap();
    let (b, _) = read_safetensors(resumed.snapshot.as_ref().unwrap()).unwrap();
    for (k, ta) in &a {
        let diff = (ta.to_kind(Kind::Double) - b[k].to_kind(Kind::Double)).abs().max().double_value(&[]);
        assert!(diff <= 1e-5, "{k}: max |diff| {diff}");
    }
}
