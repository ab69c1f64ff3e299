//! The loss code reproduces the reference's R1 penalty and path lengths on the golden networks.

mod common;
use common::*;
use sg2::model::NoiseMode;
use sg2::train::loss::{path_lengths, pl_penalty, r1_penalty};
use tch::{Kind, Tensor};

#[test]
fn r1_penalty_and_path_lengths_match_the_reference() {
    for net in ["tiny32", "tiny64"] {
        let nets = golden_nets(net);
        let (g, d) = (&nets.g, &nets.d);
        let io = golden_io(net);
        let reals = io["reals"].set_requires_grad(true);
        let logits = d.forward(&reals, None);
        assert_rel(&format!("{net} r1_penalty"), &r1_penalty(&reals, &logits), &io["r1_penalty"], 1e-3);

        let ws = io["pl_ws"].set_requires_grad(true);
        let img = g.synthesis(&ws, NoiseMode::Const);
        let lengths = path_lengths(&img, &ws, &io["pl_noise"]);
        assert_rel(&format!("{net} pl_lengths"), &lengths, &io["pl_lengths"], 1e-3);

        // The penalty from those lengths: pl_mean moves 1% toward their mean, penalty = (length - pl_mean)^2.
        let mut pl_mean = Tensor::from(0.0f32);
        let p = pl_penalty(&lengths, &mut pl_mean, 0.01);
        let reference = &io["pl_lengths"];
        let mean = reference.mean(Kind::Double).double_value(&[]) * 0.01;
        assert!((pl_mean.double_value(&[]) - mean).abs() <= 1e-3 * mean);
        assert_rel(&format!("{net} pl_penalty"), &p, &(reference.to_kind(Kind::Double) - mean).square(), 1e-3);
    }
}
