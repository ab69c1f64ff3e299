//! Shared by the integration tests: the repository, the sg2 binary, Python, the golden networks and the reference
//! tolerances; `data`, `training` and `metrics` hold the fixtures of those tests.
#![allow(dead_code)]

pub mod data;
pub mod metrics;
pub mod training;

use sg2::config::ModelConfig;
use sg2::model::checkpoint::{copy_into, read_safetensors};
use sg2::model::{Discriminator, Generator, NoiseMode};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn golden(name: &str) -> PathBuf {
    root().join("tests/golden").join(name)
}

/// A path as the &str that command lines take.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn golden_config(net: &str) -> ModelConfig {
    let text = std::fs::read_to_string(golden(&format!("{net}-kwargs.json"))).unwrap();
    sg2::model::import::config_from_kwargs(&serde_json::from_str(&text).unwrap()).unwrap()
}

pub fn golden_io(net: &str) -> BTreeMap<String, Tensor> {
    read_safetensors(&golden(&format!("{net}-io.safetensors"))).unwrap().0
}

/// A golden network's G and D on the CPU with the reference weights (the VarStores own the tensors).
pub struct GoldenNets {
    pub g: Generator,
    pub d: Discriminator,
    pub g_vs: VarStore,
    pub d_vs: VarStore,
}

pub fn golden_nets(net: &str) -> GoldenNets {
    let cfg = golden_config(net);
    let weights = |which: &str| read_safetensors(&golden(&format!("{net}-{which}.safetensors"))).unwrap().0;
    let mut g_vs = VarStore::new(Device::Cpu);
    let g = Generator::new(&g_vs.root(), &cfg);
    copy_into(&weights("G"), "", &mut g_vs, "G").unwrap();
    let mut d_vs = VarStore::new(Device::Cpu);
    let d = Discriminator::new(&d_vs.root(), &cfg);
    copy_into(&weights("D"), "", &mut d_vs, "D").unwrap();
    GoldenNets { g, d, g_vs, d_vs }
}

/// A golden network as an sg2 checkpoint, `dir/NET.safetensors`.
pub fn import_golden(net: &str, dir: &Path) -> PathBuf {
    let out = dir.join(format!("{net}.safetensors"));
    let file = |which: &str| golden(&format!("{net}-{which}"));
    let (g, d) = (file("G.safetensors"), file("D.safetensors"));
    sg2::model::import::import(&g, Some(&d), &file("kwargs.json"), &out).unwrap();
    out
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

/// The sg2 binary under test.
pub const SG2: &str = env!("CARGO_BIN_EXE_sg2");

pub fn sg2_bin() -> Command {
    Command::new(SG2)
}

/// Runs sg2 with args; returns (success, stdout, stderr).
pub fn run_sg2(args: &[&str]) -> (bool, String, String) {
    run_sg2_env(args, &[])
}

/// Runs sg2 with args and extra environment variables.
pub fn run_sg2_env(args: &[&str], env: &[(&str, &Path)]) -> (bool, String, String) {
    let out = sg2_bin().args(args).envs(env.iter().copied()).output().expect("run sg2");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

/// The Python that scripts/setup.sh installs (SG2_PYTHON), else python3 from PATH.
pub fn python() -> String {
    std::env::var("SG2_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into())
}

/// `python()`, checked to run and import `modules`: a test that needs them fails here saying what to do, rather
/// than passing without its check.
pub fn require_python(modules: &[&str]) -> String {
    let py = python();
    let out = Command::new(&py)
        .args(["-c", &format!("import {}", modules.join(", "))])
        .output()
        .unwrap_or_else(|e| panic!("cannot run Python '{py}' ({e}): run scripts/setup.sh, or set SG2_PYTHON"));
    assert!(
        out.status.success(),
        "Python '{py}' cannot import {}: run scripts/setup.sh, or set SG2_PYTHON to a Python that has them\n{}",
        modules.join(", "),
        String::from_utf8_lossy(&out.stderr)
    );
    py
}

/// Runs `python()` with args; asserts it succeeds and returns its stdout.
pub fn run_python(args: &[&str]) -> String {
    let py = python();
    let out = Command::new(&py).args(args).output().unwrap_or_else(|e| panic!("cannot run Python '{py}' ({e})"));
    assert!(out.status.success(), "python {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
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
