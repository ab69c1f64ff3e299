//! The official phase rules: no regularisation step when its weight is 0, and the non-lazy `Gboth` / `Dboth`
//! phases (one step with both terms, unscaled learning rate).

mod common;
use common::training::*;
use sg2::train::loss::{Phase, PhaseInputs};
use sg2::train::Trainer;
use tch::{Device, Kind, Tensor};

fn reals(cfg: &sg2::config::Config) -> Tensor {
    let r = cfg.model.resolution as i64;
    Tensor::randint(256, [cfg.training.batch as i64, cfg.model.channels as i64, r, r], (Kind::Uint8, Device::Cpu))
}

/// Optimizer steps of (G, D) after `n` minibatches.
fn steps_after(extra: &[&str], n: usize) -> (u64, u64) {
    tch::manual_seed(1);
    let cfg = tiny_config(extra);
    let mut tr = Trainer::new(&cfg, Device::Cpu).unwrap();
    let x = reals(&cfg);
    for _ in 0..n {
        tr.step(&x, None).unwrap();
    }
    (tr.opt_g.step, tr.opt_d.step)
}

#[test]
fn a_zero_weight_runs_no_regularisation_step() {
    // tiny_config: g_reg_interval 2, d_reg_interval 4, batch 4. Over 8 minibatches: 8 Gmain + 4 Greg, 8 Dmain +
    // 2 Dreg.
    assert_eq!(steps_after(&[], 8), (12, 10));
    // r1_gamma = 0: Dreg does nothing, so Adam takes no step (its moments do not decay, its count stays).
    assert_eq!(steps_after(&["training.r1_gamma=0"], 8), (12, 8));
    assert_eq!(steps_after(&["training.pl_weight=0"], 8), (8, 10));
    // A schedule that reaches 0 at 16 images (minibatch 4): only minibatch 0's Dreg runs.
    assert_eq!(steps_after(&["training.r1_gamma_schedule=[[0, 10], [0.016, 0]]"], 8), (12, 9));
}

#[test]
fn without_lazy_regularisation_each_network_takes_one_unscaled_step_per_minibatch() {
    let extra =
        ["training.g_reg_interval=0", "training.d_reg_interval=0", "training.g_lr=0.003", "training.adam_beta2=0.9"];
    assert_eq!(steps_after(&extra, 5), (5, 5));
    let cfg = tiny_config(&extra);
    let mut tr = Trainer::new(&cfg, Device::Cpu).unwrap();
    tr.step(&reals(&cfg), None).unwrap();
    assert_eq!(tr.opt_g.params.lr, 0.003);
    assert_eq!(tr.opt_g.params.beta2, 0.9);
    assert_eq!(tr.opt_d.params.lr, 0.002);
}

/// Gboth is Gmain plus the path-length term at gain 1 (and Dboth Dmain plus R1): the same random draws in the same
/// order give the same loss.
#[test]
fn both_phases_sum_the_main_and_regularisation_terms() {
    let cfg = tiny_config(&["training.g_reg_interval=0", "training.d_reg_interval=0"]);
    let tr = Trainer::new(&cfg, Device::Cpu).unwrap();
    let loss = tr.loss_settings();
    let z = Tensor::randn([4, 16], (Kind::Float, Device::Cpu));
    let x = reals(&cfg).to_kind(Kind::Float) / 127.5 - 1.0;
    let inputs = PhaseInputs::new(&z, &x);
    let run = |phases: &[Phase]| -> (f64, Vec<&'static str>) {
        tch::manual_seed(7);
        let mut pl_mean = Tensor::from(0.5f32);
        let mut total = 0.0;
        let mut names = vec![];
        for &p in phases {
            let out = loss.phase_loss(p, &tr.g, &tr.d, &inputs, &mut pl_mean, 1.0).unwrap().unwrap();
            total += out.loss.double_value(&[]);
            names.extend(out.stats.iter().map(|(n, _)| *n));
        }
        (total, names)
    };
    for (both, parts) in [(Phase::Gboth, [Phase::Gmain, Phase::Greg]), (Phase::Dboth, [Phase::Dmain, Phase::Dreg])] {
        let (a, names) = run(&[both]);
        let (b, _) = run(&parts);
        assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{both:?}: {a} vs {b}");
        assert!(names.contains(if both == Phase::Gboth { &"Loss/G/reg" } else { &"Loss/D/reg" }), "{names:?}");
    }
}
