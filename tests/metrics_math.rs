//! The metric formulas against independent references: scipy/numpy values computed at test time by
//! tests/fixtures/metrics_reference.py (the official formulas), closed forms and hand-computed cases.

mod common;

use sg2::metrics::stats::{mean_cov, Capture, FeatureStats};
use sg2::metrics::{fid, is, kid, linalg, ppl, pr};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{Device, Kind, Tensor};

struct Reference {
    arrays: BTreeMap<String, Tensor>,
    values: serde_json::Value,
}

fn reference(dir: &Path) -> Reference {
    let script = common::root().join("tests/fixtures/metrics_reference.py");
    common::run_python(&[script.to_str().unwrap(), dir.to_str().unwrap()]);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap()).unwrap();
    let mut arrays = BTreeMap::new();
    for (name, shape) in json["shapes"].as_object().unwrap() {
        let shape: Vec<i64> = shape.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
        let bytes = std::fs::read(dir.join(format!("{name}.f64"))).unwrap();
        let v: Vec<f64> = bytes.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
        arrays.insert(name.clone(), Tensor::from_slice(&v).reshape(&shape));
    }
    Reference { arrays, values: json["values"].clone() }
}

fn stats(x: &Tensor) -> FeatureStats {
    let mut s = FeatureStats::new(Capture::MeanCov, x.size()[0] as usize);
    for chunk in x.split(64, 0) {
        s.append(&chunk.to_kind(Kind::Double));
    }
    s
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

#[test]
fn fid_kid_is_and_ppl_filter_agree_with_scipy_and_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let r = reference(dir.path());
    let v = |k: &str| r.values[k].as_f64().unwrap();
    let a = &r.arrays;
    // FeatureStats keeps float32 features like the official; the reference gets the same float32 values only when
    // the inputs are float32-exact, so compare the float64 formulas directly as well.
    for (x, y, key) in [("fid_a", "fid_b", "fid_ab"), ("fid_c", "fid_d", "fid_cd")] {
        let (mx, sx) = mean_cov(&a[x]);
        let (my, sy) = mean_cov(&a[y]);
        let got = linalg::frechet_distance(&my, &sy, &mx, &sx);
        assert!(rel(got, v(key)) < 1e-6, "{key}: {got} vs scipy {}", v(key));
        let via_stats = fid::fid(&stats(&a[x]), &stats(&a[y])).unwrap();
        assert!(rel(via_stats, v(key)) < 1e-5, "{key} through float32 stats: {via_stats} vs {}", v(key));
    }
    // Identical sets: 0 to rounding (scipy's own value is rounding noise too).
    let (m, s) = mean_cov(&a["fid_a"]);
    assert!(linalg::frechet_distance(&m, &s, &m, &s).abs() < 1e-8);
    assert!(v("fid_aa").abs() < 1e-6);

    for (x, y, key) in [("fid_a", "fid_b", "kid_ab"), ("fid_c", "fid_d", "kid_cd")] {
        let got = kid::kid(&a[x], &a[y], 100, 1000, 0).unwrap();
        assert!(rel(got, v(key)) < 1e-9, "{key}: {got} vs numpy {}", v(key));
    }

    let (mean, std) = is::inception_score(&a["probs"], 10).unwrap();
    assert!(rel(mean, v("is_mean")) < 1e-10 && rel(std, v("is_std")) < 1e-8, "IS {mean} {std}");

    for n in [3, 10, 99, 100, 101, 250, 1000, 1001] {
        let key = format!("ppl{n}");
        let d = Vec::<f64>::try_from(&a[&key].reshape([-1])).unwrap();
        let mut s = d.clone();
        s.sort_by(|x, y| x.total_cmp(y));
        let want = r.values[&key].as_array().unwrap();
        // The same element is picked (JSON's decimal round trip can move the last bit).
        assert!(rel(ppl::percentile_sorted(&s, 1.0, false), want[0].as_f64().unwrap()) < 1e-14, "{key} lo");
        assert!(rel(ppl::percentile_sorted(&s, 99.0, true), want[1].as_f64().unwrap()) < 1e-14, "{key} hi");
        assert!(rel(ppl::filtered_mean(&d).unwrap(), want[2].as_f64().unwrap()) < 1e-12, "{key} mean");
    }
}

#[test]
fn gaussians_with_known_moments_give_the_closed_form_fid() {
    // N(mu1, diag(a)) vs N(mu2, diag(b)): FID = |mu1 - mu2|^2 + sum (a + b - 2 sqrt(a b)).
    let d = 8i64;
    let a: Vec<f64> = (0..d).map(|i| 0.5 + i as f64 * 0.25).collect();
    let b: Vec<f64> = (0..d).map(|i| 2.0 - i as f64 * 0.2).collect();
    let mu1: Vec<f64> = (0..d).map(|i| i as f64 * 0.1).collect();
    let mu2: Vec<f64> = (0..d).map(|i| 1.0 - i as f64 * 0.05).collect();
    let expect: f64 =
        (0..d as usize).map(|i| (mu1[i] - mu2[i]).powi(2) + a[i] + b[i] - 2.0 * (a[i] * b[i]).sqrt()).sum();
    // Exact moments:
    let t = |v: &[f64]| Tensor::from_slice(v);
    let exact = linalg::frechet_distance(&t(&mu1), &t(&a).diag(0), &t(&mu2), &t(&b).diag(0));
    assert!((exact - expect).abs() < 1e-12);
    // Sampled: 200k draws per set, estimates within sampling error of the closed form.
    let n = 200_000;
    let draw = |mu: &[f64], var: &[f64]| {
        Tensor::randn([n, d], (Kind::Double, Device::Cpu)) * t(var).sqrt().unsqueeze(0) + t(mu).unsqueeze(0)
    };
    tch::manual_seed(1);
    let got = fid::fid(&stats(&draw(&mu1, &a)), &stats(&draw(&mu2, &b))).unwrap();
    assert!((got - expect).abs() < 0.01 * expect + 0.002, "sampled FID {got} vs closed form {expect}");
}

#[test]
fn identical_features_give_zero_fid_and_kid() {
    let x = Tensor::randn([120, 64], (Kind::Float, Device::Cpu)).relu();
    assert!(fid::fid(&stats(&x), &stats(&x)).unwrap().abs() < 1e-6);
    // Singular (64-d features of 20 images): still 0.
    let y = x.narrow(0, 0, 20);
    assert!(fid::fid(&stats(&y), &stats(&y)).unwrap().abs() < 1e-6);
    let k = kid::kid(&x, &x, 100, 1000, 0).unwrap();
    // Every subset is all 120 rows, so each term is 2 S_off / (m - 1) - 2 (S_diag + S_off) / m with the kernel
    // matrix K = (x x^T / d + 1)^3: about 0, off by -2 (mean diagonal - mean off-diagonal) / m.
    let m = 120.0;
    let kk = (x.to_kind(Kind::Double).matmul(&x.to_kind(Kind::Double).tr()) / 64.0 + 1.0).pow_tensor_scalar(3);
    let diag = kk.diagonal(0, 0, 1).sum(Kind::Double).double_value(&[]);
    let off = kk.sum(Kind::Double).double_value(&[]) - diag;
    let expect = (2.0 * off / (m - 1.0) - 2.0 * (diag + off) / m) / m;
    assert!((k - expect).abs() < 1e-9 * expect.abs(), "KID {k} vs {expect}");
    let shifted = kid::kid(&x, &(&x + 0.5), 100, 1000, 0).unwrap();
    assert!(k.abs() < 0.05 * shifted, "KID of identical sets {k} is not small next to a shifted set's {shifted}");
}

#[test]
fn precision_recall_on_constructed_points() {
    // Reals: a 4x4 grid with spacing 1 in 2-D; k = 1 gives every real a radius of 1.
    let real: Vec<f32> = (0..16).flat_map(|i| [(i % 4) as f32, (i / 4) as f32]).collect();
    let real = Tensor::from_slice(&real).reshape([16, 2]);
    // Fakes: 3 inside the grid (within 1 of a real), 1 far away. Precision = 3/4.
    // Recall: fakes' radii (k = 1) are their nearest-fake distances; reals within them are counted by hand below.
    let gen = Tensor::from_slice(&[0.5f32, 0.0, 1.5, 0.0, 3.0, 3.5, 10.0, 10.0]).reshape([4, 2]);
    let (p, r) = pr::precision_recall(&real, &gen, 1, 3, 5).unwrap();
    assert_eq!(p, 0.75);
    // Fake radii: (0.5,0)->(1.5,0): 1; (1.5,0)->(0.5,0): 1; (3,3.5)->(1.5,0): sqrt(2.25+12.25)=3.807...;
    // (10,10)->(3,3.5): sqrt(49+42.25)=9.552...
    // Reals inside: within 1 of (0.5,0) or (1.5,0): (0,0) (1,0) (2,0); within 3.807 of (3,3.5): every real with
    // (x-3)^2 + (y-3.5)^2 <= 14.5; within 9.552 of (10,10): (3,3) at 9.899 no, none.
    let mut want = 0;
    for i in 0..16 {
        let (x, y) = ((i % 4) as f64, (i / 4) as f64);
        let near_line = (x - 0.5).hypot(y) <= 1.0 || (x - 1.5).hypot(y) <= 1.0;
        let near_top = (x - 3.0).powi(2) + (y - 3.5).powi(2) <= 14.5;
        if near_line || near_top {
            want += 1;
        }
    }
    assert_eq!(r, want as f64 / 16.0);
    // Identical sets: every point lies in its own ball.
    assert_eq!(pr::precision_recall(&real, &real, 3, 7, 7).unwrap(), (1.0, 1.0));
}

#[test]
fn inception_score_of_uniform_and_one_hot_predictions() {
    let uniform = Tensor::full([100, 1008], 1.0 / 1008.0, (Kind::Float, Device::Cpu));
    let (m, s) = is::inception_score(&uniform, 10).unwrap();
    assert!((m - 1.0).abs() < 1e-6 && s.abs() < 1e-6, "uniform: {m} {s}");
    // Confident predictions spread evenly over 5 classes in every split: IS = 5.
    let labels = Tensor::arange(100, (Kind::Int64, Device::Cpu)).remainder(5);
    let onehot = labels.one_hot(10).to_kind(Kind::Double);
    let (m, s) = is::inception_score(&onehot, 10).unwrap();
    assert!((m - 5.0).abs() < 1e-9 && s.abs() < 1e-9, "one-hot: {m} {s}");
}
