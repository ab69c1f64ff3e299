//! Shared by the integration tests: the repository, the sg2 binary, Python, the golden networks and the reference
//! tolerances; `data`, `training` and `metrics` hold the fixtures of those tests.
#![allow(dead_code)]

pub mod data;
pub mod metrics;
pub mod training;

use sg2::config::ModelConfig;
use sg2::model::checkpoint::{copy_into, read_safetensors};
use sg2::model::{Discriminator, Generator};
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
