//! The loss code reproduces the reference's R1 penalty and path lengths on the golden networks.

mod common;
use common::*;
use sg2::model::checkpoint::copy_into;
use sg2::model::{Generator, NoiseMode};
use sg2::train::loss::{path_lengths, pl_penalty, pl_term, r1_penalty};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

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

/// The gradient of the whole path-length loss (reference: tests/fixtures/make_pl_grad_golden.py): the running mean
/// keeps its graph, so the penalty's gradient also flows through the batch mean, as in the official loss.
#[test]
fn path_length_loss_gradient_matches_the_reference() {
    let cfg = golden_config("tiny32");
    let io = golden_io("tiny32");
    let (r, _) = sg2::model::checkpoint::read_safetensors(&golden("tiny32-plgrad.safetensors")).unwrap();
    let scalar = |k: &str| r[k].double_value(&[]);
    let mut gvs = VarStore::new(Device::Cpu);
    let g = Generator::new(&gvs.root(), &cfg);
    let (gt, _) = sg2::model::checkpoint::read_safetensors(&golden("tiny32-G.safetensors")).unwrap();
    copy_into(&gt, "", &mut gvs, "G").unwrap();
    let ws = io["pl_ws"].set_requires_grad(true);
    let img = g.synthesis(&ws, NoiseMode::Const);
    let mut pl_mean = Tensor::from(scalar("pl_mean_old") as f32);
    let out = pl_term(&img, &ws, &io["pl_noise"], &mut pl_mean, scalar("pl_decay"), scalar("pl_weight"), None).unwrap();
    let loss = out.loss * scalar("gain");
    assert!((loss.double_value(&[]) - scalar("loss")).abs() <= 1e-4 * scalar("loss").abs().max(1.0));
    assert!((pl_mean.double_value(&[]) - scalar("pl_mean")).abs() <= 1e-5);
    let vars = gvs.variables();
    let names: Vec<&String> = r.keys().filter(|k| k.starts_with("grad.")).collect();
    assert!(names.len() > 20, "{names:?}");
    let params: Vec<&Tensor> = names.iter().map(|k| &vars[k.strip_prefix("grad.").unwrap()]).collect();
    let mut inputs: Vec<&Tensor> = vec![&ws];
    inputs.extend(params);
    let grads = Tensor::run_backward(&[&loss], &inputs, false, false);
    assert_close("d loss / d ws", &grads[0], &r["grad_ws"]);
    for (k, gr) in names.iter().zip(&grads[1..]) {
        assert_close(k, gr, &r[k.as_str()]);
    }
}
