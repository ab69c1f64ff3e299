//! The CPU's faster convolutions in training. `training.cpu_bf16`: a training step with bf16 CPU convolutions stays
//! finite and moves the weights as the fp32 step does, to bf16's precision. (With the regularisers in bf16 too, R1
//! moved the update of one D weight, b8.conv0, by 94% of its size in this test; the trainer runs them in fp32.)
//! `training.cpu_winograd`: the fp32 Winograd step moves them as the direct one does, to float rounding.

mod common;
use common::training::tiny_config;
use sg2::model::NoiseMode;
use sg2::train::trainer::StepDraws;
use sg2::train::Trainer;
use std::collections::BTreeMap;
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

/// The convolution switches are process-wide: tests that set them take turns (`cargo test` runs them in threads).
static SWITCHES: Mutex<()> = Mutex::new(());

/// The change of every trained G and D variable over one step with every phase, from the same weights and draws.
fn updates(bf16: bool, winograd: bool) -> BTreeMap<String, Tensor> {
    let _turn = SWITCHES.lock().unwrap_or_else(|e| e.into_inner());
    sg2::nn::ops::set_cpu_bf16(bf16);
    sg2::nn::ops::set_cpu_winograd(winograd);
    let cfg = tiny_config(&["training.batch=8", "training.style_mixing_prob=0", "training.adam_eps=1"]);
    let mut tr = Trainer::new(&cfg, Device::Cpu).unwrap();
    tr.noise_mode = NoiseMode::Const;
    tch::manual_seed(7);
    let reals = Tensor::randint(256, [8, 1, 8, 8], (Kind::Uint8, Device::Cpu));
    let z = Tensor::randn([4, 8, 16], (Kind::Float, Device::Cpu));
    let pl_noise = Tensor::randn([4, 1, 8, 8], (Kind::Float, Device::Cpu)) / 8.0;
    let draws = StepDraws { z, gen_c: None, pl_noise: Some(pl_noise) };
    let vars = |tr: &Trainer| {
        let mut m = BTreeMap::new();
        for (net, vs) in [("G", &tr.g_vs), ("D", &tr.d_vs)] {
            for (k, v) in vs.trainable_variables().into_iter().enumerate() {
                m.insert(format!("{net}.{k}"), v.detach().copy());
            }
        }
        m
    };
    let before = vars(&tr);
    tr.step_with(&reals, None, Some(&draws)).unwrap();
    tr.check_nonfinite().unwrap();
    sg2::nn::ops::set_cpu_bf16(false);
    sg2::nn::ops::set_cpu_winograd(false);
    vars(&tr).into_iter().map(|(k, after)| (k.clone(), after - &before[&k])).collect()
}

/// |fast - exact| / |exact| over all the updates, every update finite.
fn relative_difference(exact: &BTreeMap<String, Tensor>, fast: &BTreeMap<String, Tensor>) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (k, e) in exact {
        let f = &fast[k];
        assert_eq!(f.isfinite().all().int64_value(&[]), 1, "{k}: not finite");
        num += (f - e).square().sum(Kind::Double).double_value(&[]);
        den += e.square().sum(Kind::Double).double_value(&[]);
    }
    assert!(den > 0.0, "the step moved nothing");
    (num / den).sqrt()
}

#[test]
fn a_bf16_step_tracks_the_fp32_step() {
    let rel = relative_difference(&updates(false, false), &updates(true, false));
    // Not equal (the convolutions did run in bf16), but within a few percent.
    assert!(rel > 1e-6 && rel < 0.05, "bf16 update differs from fp32 by {rel:e} (relative)");
}

#[test]
fn a_winograd_step_tracks_the_direct_step() {
    let rel = relative_difference(&updates(false, false), &updates(false, true));
    // Not equal (the 8x8 layers did run by Winograd), but as close as float rounding leaves them.
    assert!(rel > 1e-9 && rel < 1e-4, "the Winograd update differs from the direct one by {rel:e} (relative)");
}
