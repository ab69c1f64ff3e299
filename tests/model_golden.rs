//! The networks reproduce the reference implementation's outputs (tests/golden, see its README).

mod common;
use common::*;
use sg2::image_io::to_uint8_nhwc;
use sg2::model::NoiseMode;
use sg2::nn::ModConv;
use tch::Tensor;

fn check_forward(net: &str, mode: ModConv) {
    let mut n = golden_nets(net);
    n.g.modconv = Some(mode);
    let io = golden_io(net);
    let z = &io["z"];
    tch::no_grad(|| {
        for psi in ["1.0", "0.7", "0.5"] {
            let ws = n.g.mapping(z, None, psi.parse().unwrap(), None);
            assert_close(&format!("{net} ws_psi{psi}"), &ws, &io[&format!("ws_psi{psi}")]);
        }
        for psi in ["1.0", "0.5"] {
            let img = n.g.forward(z, None, psi.parse().unwrap(), NoiseMode::Const);
            assert_close(&format!("{net} img_const_psi{psi}"), &img, &io[&format!("img_const_psi{psi}")]);
            assert_uint8_match(
                &format!("{net} uint8_const_psi{psi}"),
                &to_uint8_nhwc(&img),
                &io[&format!("uint8_const_psi{psi}")],
            );
        }
        let img = n.g.forward(z, None, 1.0, NoiseMode::None);
        assert_close(&format!("{net} img_none_psi1.0"), &img, &io["img_none_psi1.0"]);
        let mix = n.g.synthesis(&io["mix_ws"], NoiseMode::Const);
        assert_close(&format!("{net} mix_img"), &mix, &io["mix_img"]);
        for (input, out) in [
            ("img_const_psi1.0", "d_logits_fake"),
            ("img_const_psi0.5", "d_logits_fake_psi0.5"),
            ("reals", "d_logits_real"),
        ] {
            let logits = n.d.forward(&io[input], None);
            assert_close(&format!("{net} {out}"), &logits, &io[out]);
        }
    });
}

#[test]
fn tiny32_forward_matches_reference_fused() {
    check_forward("tiny32", ModConv::Fused);
}

#[test]
fn tiny32_forward_matches_reference_unfused() {
    check_forward("tiny32", ModConv::Unfused);
}

#[test]
fn tiny64_forward_matches_reference() {
    check_forward("tiny64", ModConv::Fused);
    check_forward("tiny64", ModConv::Unfused);
}

#[test]
fn style_mixing_cutoff_matches_reference() {
    for net in ["tiny32", "tiny64"] {
        let n = golden_nets(net);
        let io = golden_io(net);
        let cutoff = io["mix_cutoff"].int64_value(&[]);
        let ws = &io["ws_psi1.0"];
        let num_ws = ws.size()[1];
        // Seed 0's ws with layers cutoff.. from seed 1, built independently of the stored mix_ws.
        let mixed = Tensor::cat(
            &[ws.narrow(0, 0, 1).narrow(1, 0, cutoff), ws.narrow(0, 1, 1).narrow(1, cutoff, num_ws - cutoff)],
            1,
        );
        assert_close(&format!("{net} mix_ws"), &mixed, &io["mix_ws"]);
        let img = tch::no_grad(|| n.g.synthesis(&mixed, NoiseMode::Const));
        assert_close(&format!("{net} mix_img"), &img, &io["mix_img"]);
    }
}

#[test]
fn truncation_cutoff_only_touches_first_layers() {
    let n = golden_nets("tiny32");
    let io = golden_io("tiny32");
    let z = &io["z"];
    let full = n.g.mapping(z, None, 1.0, None);
    let trunc = n.g.mapping(z, None, 0.5, None);
    let cut = n.g.mapping(z, None, 0.5, Some(3));
    assert_close("head", &cut.narrow(1, 0, 3), &trunc.narrow(1, 0, 3));
    assert_close("tail", &cut.narrow(1, 3, 5), &full.narrow(1, 3, 5));
}

/// Without an explicit form, inference takes the device's faster one: on the CPU the unfused form, bit for bit.
#[test]
fn the_default_form_on_the_cpu_is_the_unfused_one() {
    assert_eq!(ModConv::inference_default(tch::Device::Cpu), ModConv::Unfused);
    assert_eq!(ModConv::inference_default(tch::Device::Cuda(0)), ModConv::Fused);
    let mut n = golden_nets("tiny32");
    assert_eq!(n.g.modconv, None);
    let z = &golden_io("tiny32")["z"];
    let default = tch::no_grad(|| n.g.forward(z, None, 1.0, NoiseMode::Const));
    n.g.modconv = Some(ModConv::Unfused);
    let unfused = tch::no_grad(|| n.g.forward(z, None, 1.0, NoiseMode::Const));
    n.g.modconv = Some(ModConv::Fused);
    let fused = tch::no_grad(|| n.g.forward(z, None, 1.0, NoiseMode::Const));
    assert!(default.equal(&unfused));
    assert!(!default.equal(&fused), "the two forms round differently, so the comparison can tell them apart");
}
