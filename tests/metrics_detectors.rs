//! Detector calls: the keyword arguments of the official code, placed by the signature read from the TorchScript
//! file, give what Python's keyword call gives on the same module and input. Both sides run one thread without autograd
//! so that libtorch picks the same kernels; the tolerance still allows for another kernel (a misplaced argument changes
//! the output by its own size, not by 1e-4 of it).

mod common;

use sg2::metrics::detector::{forward_signature, Detector, Param};
use tch::{Device, Kind, Tensor};

const PY: &str = r#"
import json, sys, torch
torch.set_num_threads(1)
torch.set_grad_enabled(False)
d = sys.argv[1]
img = (torch.arange(2 * 3 * 40 * 40) * 7 % 256).to(torch.uint8).reshape(2, 3, 40, 40)
inc = torch.jit.load(d + "/inception-2015-12-05.pt")
vgg = torch.jit.load(d + "/vgg16.pt")
out = {}
def put(k, t):
    out[k] = dict(shape=list(t.shape), values=t.double().flatten().tolist())
put("features", inc(img, return_features=True))
put("probs", inc(img, no_output_bias=True))
put("probs_bias", inc(img))
put("vgg_features", vgg(img, return_features=True))
put("lpips", vgg(img.float(), resize_images=False, return_lpips=True))
print(json.dumps(out))
"#;

fn check(name: &str, got: &Tensor, want: &serde_json::Value) {
    let shape: Vec<i64> = want["shape"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(got.size(), shape, "{name}: shape");
    let w: Vec<f64> = want["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let g = Vec::<f64>::try_from(&got.to_kind(Kind::Double).reshape([-1])).unwrap();
    let scale = w.iter().fold(1e-30f64, |m, v| m.max(v.abs()));
    let diff = g.iter().zip(&w).fold(0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(diff <= 1e-4 * scale, "{name}: max |diff| {diff} (scale {scale})");
}

#[test]
fn keyword_calls_match_python_and_signatures_are_read_from_the_files() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    common::metrics::make_detectors(dir.path());
    let inc_path = dir.path().join("inception-2015-12-05.pt");
    let vgg_path = dir.path().join("vgg16.pt");
    let p = |n: &str, d: bool| Param { name: n.into(), default: Some(d) };
    assert_eq!(
        forward_signature(&inc_path).unwrap(),
        [p("return_features", false), p("use_fp16", false), p("no_output_bias", false)]
    );
    assert_eq!(
        forward_signature(&vgg_path).unwrap(),
        [p("resize_images", true), p("return_lpips", false), p("return_features", false)]
    );

    let out = common::run_python(&["-c", PY, dir.path().to_str().unwrap()]);
    let want: serde_json::Value = serde_json::from_str(&out).unwrap();
    let img = (Tensor::arange(2 * 3 * 40 * 40, (Kind::Int64, Device::Cpu)) * 7)
        .remainder(256)
        .to_kind(Kind::Uint8)
        .reshape([2, 3, 40, 40]);
    let inc = Detector::load(&inc_path, Device::Cpu).unwrap();
    let vgg = Detector::load(&vgg_path, Device::Cpu).unwrap();
    check("features", &inc.run_u8(&img, &[("return_features", true)]).unwrap(), &want["features"]);
    let probs = inc.run_u8(&img, &[("no_output_bias", true)]).unwrap();
    check("probs", &probs, &want["probs"]);
    check("probs_bias", &inc.run_u8(&img, &[]).unwrap(), &want["probs_bias"]);
    let sums = probs.sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
    assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-5);
    check("vgg_features", &vgg.run_u8(&img, &[("return_features", true)]).unwrap(), &want["vgg_features"]);
    let lp = vgg.call(&img.to_kind(Kind::Float), &[("resize_images", false), ("return_lpips", true)]).unwrap();
    check("lpips", &lp, &want["lpips"]);
    // One-channel images are repeated to three, as the official feeds them.
    let gray = img.narrow(1, 0, 1);
    let a = inc.run_u8(&gray, &[("return_features", true)]).unwrap();
    let b = inc.run_u8(&gray.repeat([1, 3, 1, 1]), &[("return_features", true)]).unwrap();
    assert!(a.equal(&b));
    // An argument the module does not have is an error naming the file, not a silent default.
    let e = inc.call(&img, &[("return_lpips", true)]).unwrap_err().to_string();
    assert!(e.contains("inception-2015-12-05.pt") && e.contains("no argument \"return_lpips\""), "{e}");
}

/// Detectors with the official signatures whose outputs are NaN: refused by name wherever they are used, before a
/// value, a statistics cache or a projection comes of them.
#[test]
fn detectors_giving_nan_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let det = dir.path().join("det");
    common::metrics::make_nan_detectors(&det);
    let img = Tensor::zeros([2, 3, 16, 16], (Kind::Uint8, Device::Cpu));
    let inc = Detector::load(&det.join("inception-2015-12-05.pt"), Device::Cpu).unwrap();
    let e = inc.run_u8(&img, &[("return_features", true)]).unwrap_err().to_string();
    assert!(e.contains("inception-2015-12-05.pt: gave NaN or infinite values"), "{e}");

    // The projector tries the detector on the target before anything else and writes nothing.
    let net = common::import_golden("tiny32", dir.path());
    let target = dir.path().join("t.png");
    image::RgbImage::new(32, 32).save(&target).unwrap();
    let out = dir.path().join("proj");
    let (ok, _, err) = common::run_sg2(&[
        "--device",
        "cpu",
        "project",
        "--network",
        net.to_str().unwrap(),
        "--target",
        target.to_str().unwrap(),
        "--detector-dir",
        det.to_str().unwrap(),
        "--num-steps",
        "2",
        "--outdir",
        out.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("vgg16.pt: gave NaN or infinite values"), "{err}");
    assert!(!out.exists());
}

/// `sg2 bench metrics` times the forward and the extraction of any detector, and FID's mean/covariance only for
/// Inception's 2048 features.
#[test]
fn bench_metrics_reports_the_lines_that_apply_to_the_detector() {
    let dir = tempfile::tempdir().unwrap();
    common::metrics::make_detectors(dir.path());
    for (file, fid) in [("inception-2015-12-05.pt", true), ("vgg16.pt", false)] {
        let det = dir.path().join(file);
        let args = ["--device", "cpu", "bench", "metrics", "--detector", det.to_str().unwrap(), "--batch", "2"];
        let (ok, out, err) = common::run_sg2(&[&args[..], &["--batches", "1"]].concat());
        assert!(ok, "{err}");
        assert!(out.contains("raw forward") && out.contains("extraction (host records -> features)"), "{out}");
        assert_eq!(out.contains("mean/cov (FID)"), fid, "{file}: {out}");
    }
}
