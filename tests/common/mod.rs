//! Shared helpers for the integration tests: golden files and the reference tolerances.
#![allow(dead_code)]

use sg2::config::ModelConfig;
use sg2::model::checkpoint::read_safetensors;
use sg2::model::{Discriminator, Generator, NoiseMode};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Kind, Tensor};

pub fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

pub fn golden_config(net: &str) -> ModelConfig {
    let text = std::fs::read_to_string(golden(&format!("{net}-kwargs.json"))).unwrap();
    sg2::model::import::config_from_kwargs(&serde_json::from_str(&text).unwrap()).unwrap()
}

pub fn golden_io(net: &str) -> BTreeMap<String, Tensor> {
    read_safetensors(&golden(&format!("{net}-io.safetensors"))).unwrap().0
}

/// The golden README's float tolerance: max |a - ref| <= 1e-4 * max(1, max |ref|).
pub fn assert_close(what: &str, a: &Tensor, reference: &Tensor) {
    assert_eq!(a.size(), reference.size(), "{what}: shape");
    let a = a.to_kind(Kind::Double).to_device(tch::Device::Cpu);
    let r = reference.to_kind(Kind::Double);
    let scale = r.abs().max().double_value(&[]).max(1.0);
    let diff = (&a - &r).abs().max().double_value(&[]);
    assert!(diff <= 1e-4 * scale, "{what}: max |diff| {diff:e} > 1e-4 * {scale}");
}

/// Relative error bound for scalar-per-sample outputs (R1, path lengths).
pub fn assert_rel(what: &str, a: &Tensor, reference: &Tensor, tol: f64) {
    let a = a.to_kind(Kind::Double).to_device(tch::Device::Cpu);
    let r = reference.to_kind(Kind::Double);
    let rel = ((&a - &r).abs() / r.abs().clamp_min(1e-30)).max().double_value(&[]);
    assert!(rel <= tol, "{what}: relative error {rel:e} > {tol:e}");
}

/// uint8 images: identical except at most 0.1% of values one level apart.
pub fn assert_uint8_match(what: &str, a: &Tensor, reference: &Tensor) {
    assert_eq!(a.size(), reference.size(), "{what}: shape");
    let d = (a.to_kind(Kind::Int) - reference.to_kind(Kind::Int)).abs();
    let max = d.max().int64_value(&[]);
    let off = d.gt(0).sum(Kind::Int64).int64_value(&[]) as f64;
    let n = d.numel() as f64;
    assert!(max <= 1, "{what}: a value differs by {max} levels");
    assert!(off / n <= 0.001, "{what}: {off} of {n} values one level apart");
}

pub fn sg2_bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_sg2"))
}

/// Runs sg2 with args; returns (success, stdout, stderr).
pub fn run_sg2(args: &[&str]) -> (bool, String, String) {
    let out = sg2_bin().args(args).output().expect("run sg2");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The Python with numpy that the setup script installs (SG2_PYTHON), else python3.
pub fn python() -> String {
    std::env::var("SG2_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Imports a golden network into an sg2 checkpoint in `dir`.
pub fn import_golden(net: &str, dir: &std::path::Path) -> PathBuf {
    let out = dir.join(format!("{net}.safetensors"));
    let g = golden(&format!("{net}-G.safetensors"));
    let d = golden(&format!("{net}-D.safetensors"));
    let kw = golden(&format!("{net}-kwargs.json"));
    let (ok, _, err) = run_sg2(&[
        "import",
        "--g",
        g.to_str().unwrap(),
        "--d",
        d.to_str().unwrap(),
        "--kwargs",
        kw.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(ok, "import failed: {err}");
    out
}

/// `G.forward` images as the official generate.py saves them: NHWC uint8.
pub fn to_uint8(img: &Tensor) -> Tensor {
    (img.permute([0, 2, 3, 1]) * 127.5 + 128.0).clamp(0.0, 255.0).to_kind(Kind::Uint8)
}

/// Every forward output of `tests/golden/<net>-io.safetensors`: ws with psi 1, 0.7, 0.5; images with constant and no
/// noise (float and uint8); style mixing; D's logits for fakes and reals.
pub fn check_forward_outputs(net: &str, g: &Generator, d: &Discriminator) {
    let io = golden_io(net);
    let z = &io["z"];
    tch::no_grad(|| {
        for psi in ["1.0", "0.7", "0.5"] {
            let ws = g.mapping(z, None, psi.parse().unwrap(), None);
            assert_close(&format!("{net} ws_psi{psi}"), &ws, &io[&format!("ws_psi{psi}")]);
        }
        for psi in ["1.0", "0.5"] {
            let img = g.forward(z, None, psi.parse().unwrap(), NoiseMode::Const);
            assert_close(&format!("{net} img_const_psi{psi}"), &img, &io[&format!("img_const_psi{psi}")]);
            assert_uint8_match(
                &format!("{net} uint8_const_psi{psi}"),
                &to_uint8(&img),
                &io[&format!("uint8_const_psi{psi}")],
            );
        }
        let img = g.forward(z, None, 1.0, NoiseMode::None);
        assert_close(&format!("{net} img_none_psi1.0"), &img, &io["img_none_psi1.0"]);
        let mix = g.synthesis(&io["mix_ws"], NoiseMode::Const);
        assert_close(&format!("{net} mix_img"), &mix, &io["mix_img"]);
        for (input, out) in [
            ("img_const_psi1.0", "d_logits_fake"),
            ("img_const_psi0.5", "d_logits_fake_psi0.5"),
            ("reals", "d_logits_real"),
        ] {
            let logits = d.forward(&io[input], None);
            assert_close(&format!("{net} {out}"), &logits, &io[out]);
        }
    });
}

/// The gradient outputs of `tests/golden/<net>-io.safetensors`: the R1 penalty and the path lengths.
pub fn check_gradient_outputs(net: &str, g: &Generator, d: &Discriminator) {
    let io = golden_io(net);
    let reals = io["reals"].set_requires_grad(true);
    let logits = d.forward(&reals, None);
    let grad = &Tensor::run_backward(&[logits.sum(Kind::Float)], &[&reals], false, false)[0];
    let r1 = grad.square().sum_dim_intlist(&[1i64, 2, 3][..], false, Kind::Float);
    assert_rel(&format!("{net} r1_penalty"), &r1, &io["r1_penalty"], 1e-3);

    let ws = io["pl_ws"].set_requires_grad(true);
    let img = g.synthesis(&ws, NoiseMode::Const);
    let out = (img * &io["pl_noise"]).sum(Kind::Float);
    let grad = &Tensor::run_backward(&[out], &[&ws], false, false)[0];
    let lengths =
        grad.square().sum_dim_intlist(&[2i64][..], false, Kind::Float).mean_dim(&[1i64][..], false, Kind::Float).sqrt();
    assert_rel(&format!("{net} pl_lengths"), &lengths, &io["pl_lengths"], 1e-3);
}
