//! Tests of the resampling and convolution ops against hand-derived values and the reference's golden cases.

use super::*;

fn t(v: &[f32], shape: &[i64]) -> Tensor {
    Tensor::from_slice(v).reshape(shape)
}

#[test]
fn filter_is_normalized_outer_product() {
    let f = setup_filter(&[1.0, 3.0, 3.0, 1.0], tch::Device::Cpu);
    assert_eq!(f.size(), vec![4, 4]);
    assert!((f.double_value(&[1, 2]) - 9.0 / 64.0).abs() < 1e-7);
    assert!((f.sum(Kind::Double).double_value(&[]) - 1.0).abs() < 1e-6);
}

/// The reference's `upsample2d`, `downsample2d` and `conv2d_resample` for filters of 1 to 5 taps and every
/// layer shape of G and D (tests/fixtures/make_resample_golden.py).
#[test]
fn resampling_matches_the_reference_for_short_and_long_filters() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/resample-cases.safetensors");
    let (g, meta) = crate::model::checkpoint::read_safetensors(std::path::Path::new(path)).unwrap();
    let filters: Vec<Vec<f64>> = serde_json::from_str(&meta["filters"]).unwrap();
    let convs: Vec<(i64, i64, i64)> = serde_json::from_str(&meta["convs"]).unwrap();
    let x = &g["x"];
    let close = |name: &str, y: &Tensor| {
        let want = &g[name];
        assert_eq!(y.size(), want.size(), "{name}");
        let err = (y - want).abs().max().double_value(&[]);
        assert!(err < 1e-5, "{name}: max error {err}");
    };
    for (i, taps) in filters.iter().enumerate() {
        let f = setup_filter(taps, tch::Device::Cpu);
        close(&format!("f{i}_up2"), &upsample2d(x, &f, 2));
        close(&format!("f{i}_down2"), &downsample2d(x, &f, 2));
        for &(k, up, down) in &convs {
            let spec =
                Conv2dResampleSpec { filter: Some(&f), up, down, padding: k / 2, groups: 1, flip_weight: up == 1 };
            let y = with_cpu_winograd(false, || conv2d_resample(x, &g[&format!("w{k}")], &spec));
            close(&format!("f{i}_k{k}_up{up}_down{down}"), &y);
        }
    }
}

#[test]
fn upsample_then_downsample_preserves_constants() {
    let f = setup_filter(&[1.0, 3.0, 3.0, 1.0], tch::Device::Cpu);
    let x = Tensor::ones([1, 2, 8, 8], (Kind::Float, tch::Device::Cpu)) * 3.0;
    let up = upsample2d(&x, &f, 2);
    assert_eq!(up.size(), vec![1, 2, 16, 16]);
    // Interior pixels of an upsampled constant stay constant (the gain makes up for the zeros).
    assert!((up.double_value(&[0, 1, 8, 8]) - 3.0).abs() < 1e-5);
    let down = downsample2d(&x, &f, 2);
    assert_eq!(down.size(), vec![1, 2, 4, 4]);
    assert!((down.double_value(&[0, 0, 2, 2]) - 3.0).abs() < 1e-5);
}

#[test]
fn upfirdn_with_delta_filter_is_zero_insertion() {
    let f = t(&[1.0], &[1, 1]);
    let x = t(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]);
    let y = upfirdn2d(&x, &f, 2, 1, [0, 0, 0, 0], 1.0);
    let v: Vec<f32> = Vec::try_from(y.flatten(0, -1)).unwrap();
    assert_eq!(v, vec![1., 0., 2., 0., 0., 0., 0., 0., 3., 0., 4., 0., 0., 0., 0., 0.]);
    let y = upfirdn2d(&x, &f, 1, 1, [-1, 0, 0, -1], 1.0);
    let v: Vec<f32> = Vec::try_from(y.flatten(0, -1)).unwrap();
    assert_eq!(v, vec![2.0]);
}

#[test]
fn resampling_convolutions_keep_channels_last_and_values() {
    tch::manual_seed(3);
    let opts = (Kind::Float, tch::Device::Cpu);
    let f = setup_filter(&[1.0, 3.0, 3.0, 1.0], tch::Device::Cpu);
    let x = Tensor::randn([2, 8, 8, 8], opts);
    let xl = with_layout(&x, true);
    assert!(is_channels_last(&xl) && !is_channels_last(&x));
    for (k, up, down) in [(3, 1, 1), (3, 2, 1), (3, 1, 2), (1, 1, 2), (1, 2, 1)] {
        let w = Tensor::randn([6, 8, k, k], opts);
        let spec = Conv2dResampleSpec { filter: Some(&f), up, down, padding: k / 2, groups: 1, flip_weight: up == 1 };
        let (a, b) = (conv2d_resample(&x, &w, &spec), conv2d_resample(&xl, &w, &spec));
        assert!(is_channels_last(&b), "k{k} up{up} down{down}: {:?}", b.stride());
        let d = (&a - &b).abs().max().double_value(&[]);
        assert!(d < 1e-5, "k{k} up{up} down{down}: {d}");
    }
    let (a, b) = (downsample2d(&x, &f, 2), downsample2d(&xl, &f, 2));
    assert!(is_channels_last(&b));
    assert!((&a - &b).abs().max().double_value(&[]) < 1e-6);
}

#[test]
fn bf16_convolutions_round_inputs_and_keep_fp32_outputs() {
    tch::manual_seed(4);
    let opts = (Kind::Float, tch::Device::Cpu);
    let x = with_layout(&Tensor::randn([2, 16, 8, 8], opts), true);
    let w = Tensor::randn([8, 16, 3, 3], opts);
    let spec = Conv2dResampleSpec { filter: None, up: 1, down: 1, padding: 1, groups: 1, flip_weight: true };
    let exact = conv2d_resample(&x, &w, &spec);
    let fast = with_cpu_bf16(true, || conv2d_resample(&x, &w, &spec));
    assert_eq!(fast.kind(), Kind::BFloat16, "left in bf16 for the epilogue");
    let fast = fast.to_kind(Kind::Float);
    // The fp32 convolution of the bf16-rounded operands, its output rounded to bf16: each value within one bf16
    // step (2^-8 relative) of that, where plain fp32 is further off.
    let r = |t: &Tensor| t.to_kind(Kind::BFloat16).to_kind(Kind::Float);
    let rounded = conv2d_resample(&r(&x), &r(&w), &spec);
    let bound = rounded.abs() * (1.0 / 256.0) + 1e-6;
    let off = (&fast - &rounded).abs().gt_tensor(&bound).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(off, 0, "values beyond one bf16 step of the rounded operands' convolution");
    let scale = exact.abs().max().double_value(&[]);
    let d_exact = (&fast - &exact).abs().max().double_value(&[]) / scale;
    assert!(d_exact > 1e-5 && d_exact < 3e-2, "bf16 differs from fp32 by {d_exact}");
}

/// The fused epilogue against the chain on the same operands: forward bit for bit, gradients (first order and,
/// through R1-style create_graph, second order) to fp32 rounding.
#[test]
fn fused_epilogue_matches_the_chain() {
    tch::manual_seed(5);
    let opts = (Kind::Float, tch::Device::Cpu);
    let (n, c, h, w) = (3i64, 20i64, 5i64, 7i64);
    let leaf = |t: Tensor| t.set_requires_grad(true);
    for (case, noise_shape, act, clamp) in [
        (0, Some(vec![n, 1, h, w]), Act::Lrelu, None),
        (1, Some(vec![h, w]), Act::Lrelu, Some(0.7)),
        (2, None, Act::Linear, Some(0.5)),
        (3, Some(vec![1, 1, h, w]), Act::Linear, None),
    ] {
        let x0 = with_layout(&Tensor::randn([n, c, h, w], opts), true);
        let x = leaf(x0.shallow_clone().detach());
        let s = leaf(Tensor::randn([n, c], opts));
        let nz = noise_shape.map(|sh| leaf(Tensor::randn(sh.as_slice(), opts)));
        let b = leaf(Tensor::randn([c], opts));
        let post = BiasAct { bias: Some(&b), act, gain: 1.3, clamp };
        let fused = crate::ffi::fused::bias_act(&x, Some(&s), nz.as_ref(), Some(&b), act == Act::Lrelu, 1.3, clamp)
            .expect("fused op applies");
        let chain = epilogue_chain(&x, Some(&s), nz.as_ref(), &post);
        assert!(fused.equal(&chain), "case {case}: forward differs");
        assert!(is_channels_last(&fused), "case {case}");
        // First order: every operand's gradient.
        let gy = Tensor::randn([n, c, h, w], opts);
        let mut inputs = vec![&x, &s, &b];
        if let Some(t) = &nz {
            inputs.push(t);
        }
        let g1 = Tensor::run_backward(&[(&fused * &gy).sum(Kind::Float)], &inputs, true, false);
        let g2 = Tensor::run_backward(&[(&chain * &gy).sum(Kind::Float)], &inputs, true, false);
        for (i, (a, r)) in g1.iter().zip(&g2).enumerate() {
            let d = (a - r).abs().max().double_value(&[]);
            assert!(d <= 1e-5 * r.abs().max().double_value(&[]).max(1.0), "case {case}, input {i}: {d}");
        }
        let mut leaves = vec![&x, &s, &b];
        leaves.extend(nz.as_ref());
        assert_same_second_order(&format!("case {case}"), &leaves, &fused, &chain);
    }
    // Without a scale (D's layers), 4-D and [N, C].
    for shape in [vec![n, c, h, w], vec![n, c]] {
        let x = leaf(with_layout(&Tensor::randn(shape.as_slice(), opts), true).detach());
        let b = leaf(Tensor::randn([c], opts));
        let post = BiasAct { bias: Some(&b), act: Act::Lrelu, gain: 1.3, clamp: None };
        let fused = crate::ffi::fused::bias_act(&x, None, None, Some(&b), true, 1.3, None).unwrap();
        let chain = epilogue_chain(&x, None, None, &post);
        assert_same_second_order(&format!("no scale {shape:?}"), &[&x, &b], &fused, &chain);
    }
    // [N, C] (the mapping network's layers), and operands it does not take.
    let x = Tensor::randn([4, 9], opts);
    let b = Tensor::randn([9], opts);
    let post = BiasAct { bias: Some(&b), act: Act::Lrelu, gain: 2f64.sqrt(), clamp: None };
    let fused = crate::ffi::fused::bias_act(&x, None, None, Some(&b), true, 2f64.sqrt(), None).unwrap();
    assert!(fused.equal(&epilogue_chain(&x, None, None, &post)));
    let nchw = Tensor::randn([2, 3, 4, 4], opts);
    assert!(crate::ffi::fused::bias_act(&nchw, None, None, None, true, 1.0, None).is_none(), "NCHW");
    let wrong = Tensor::randn([5], opts);
    let cl = with_layout(&nchw, true);
    assert!(crate::ffi::fused::bias_act(&cl, None, None, Some(&wrong), true, 1.0, None).is_none(), "bias");
    let half = cl.to_kind(Kind::Half);
    assert!(crate::ffi::fused::bias_act(&half, None, None, None, true, 1.0, None).is_none(), "fp16");
}

/// The second order of `y` against `reference` (both functions of `leaves`): the first-order gradients of
/// <y, gy> (gy a leaf too), weighted by fixed random tensors and summed, differentiated w.r.t. every leaf and
/// gy, as R1 and path-length regularisation differentiate a gradient. A gradient one side leaves out must be
/// zero on the other.
fn assert_same_second_order(case: &str, leaves: &[&Tensor], y: &Tensor, reference: &Tensor) {
    tch::manual_seed(11);
    let gy = y.detach().randn_like().set_requires_grad(true);
    let weights: Vec<Tensor> = leaves.iter().map(|t| t.detach().randn_like()).collect();
    let second = |y: &Tensor| {
        let g1 = Tensor::run_backward(&[(y * &gy).sum(Kind::Float)], leaves, true, true);
        let total = g1
            .iter()
            .zip(&weights)
            .filter(|(g, _)| g.defined())
            .map(|(g, w)| (g * w).sum(Kind::Float))
            .reduce(|a, b| a + b)
            .unwrap();
        let mut all = leaves.to_vec();
        all.push(&gy);
        Tensor::run_backward(&[total], &all, true, false)
    };
    let (a, r) = (second(y), second(reference));
    for (i, (a, r)) in a.iter().zip(&r).enumerate() {
        let size = |t: &Tensor| if t.defined() { t.abs().max().double_value(&[]) } else { 0.0 };
        if !a.defined() || !r.defined() {
            assert!(size(a) == 0.0 && size(r) == 0.0, "{case}, 2nd order {i}: nonzero where the other has none");
            continue;
        }
        let d = (a - r).abs().max().double_value(&[]);
        assert!(d <= 1e-5 * size(r).max(1.0), "{case}, 2nd order {i}: {d}");
    }
    assert!(a.last().unwrap().defined(), "{case}: the gradient's own gradient reaches gy");
}

/// The fused modulation against the product x * s[n, c], to second order.
#[test]
fn fused_modulation_matches_the_product() {
    tch::manual_seed(7);
    let opts = (Kind::Float, tch::Device::Cpu);
    for shape in [vec![3i64, 20, 5, 7], vec![3, 20]] {
        let x = with_layout(&Tensor::randn(shape.as_slice(), opts), true).set_requires_grad(true);
        let s = Tensor::randn([3, 20], opts).set_requires_grad(true);
        let fused = crate::ffi::fused::modulate(&x, &s, false).expect("fused modulation applies");
        let product = &x * per_sample_channel(&s, x.dim());
        assert!(fused.equal(&product), "{shape:?}: forward");
        assert_same_second_order(&format!("modulate {shape:?}"), &[&x, &s], &fused, &product);
    }
}

/// The bf16 path end to end (modulation rounded to bf16, bf16 convolution, the epilogue taking its bf16
/// output): close to fp32 forward and backward, gradients in the parameters' kinds.
#[test]
fn bf16_modulated_convolution_tracks_fp32() {
    tch::manual_seed(6);
    let opts = (Kind::Float, tch::Device::Cpu);
    let f = setup_filter(&[1.0, 3.0, 3.0, 1.0], tch::Device::Cpu);
    let x = with_layout(&Tensor::randn([4, 16, 8, 8], opts), true).set_requires_grad(true);
    let w = Tensor::randn([16, 16, 3, 3], opts).set_requires_grad(true);
    let s = Tensor::randn([4, 16], opts).set_requires_grad(true);
    let b = Tensor::randn([16], opts).set_requires_grad(true);
    for up in [1, 2] {
        let noise = Tensor::randn([4, 1, 8 * up, 8 * up], opts);
        let spec = ModConvSpec {
            up,
            padding: 1,
            resample_filter: Some(&f),
            demodulate: true,
            flip_weight: up == 1,
            mode: ModConv::Unfused,
        };
        let post = BiasAct { bias: Some(&b), act: Act::Lrelu, gain: 2f64.sqrt(), clamp: None };
        let run = |bf16: bool| {
            with_cpu_bf16(bf16, || {
                let y = modulated_conv2d(&x, &w, &s, Some(&noise), &spec, &post);
                let g = Tensor::run_backward(&[y.square().sum(Kind::Float)], &[&x, &w, &s, &b], false, false);
                (y, g)
            })
        };
        let (y32, g32) = run(false);
        let (y16, g16) = run(true);
        assert_eq!(y16.kind(), Kind::Float);
        let rel = |a: &Tensor, r: &Tensor| (a - r).abs().max().double_value(&[]) / r.abs().max().double_value(&[]);
        assert!(rel(&y16, &y32) < 3e-2, "up {up}: forward {}", rel(&y16, &y32));
        for (i, (a, r)) in g16.iter().zip(&g32).enumerate() {
            assert_eq!(a.kind(), Kind::Float, "up {up}: gradient {i}");
            assert!(rel(a, r) < 5e-2, "up {up}: gradient {i}: {}", rel(a, r));
        }
    }
}

#[test]
fn bias_act_lrelu_gain_and_clamp() {
    let x = t(&[-1.0, 2.0], &[1, 2]);
    let b = t(&[0.5, 0.5], &[2]);
    let y = bias_act(&x, Some(&b), Act::Lrelu, 2.0, Some(4.0));
    let v: Vec<f32> = Vec::try_from(y.flatten(0, -1)).unwrap();
    assert!((v[0] - (-0.5 * 0.2 * 2.0)).abs() < 1e-6);
    assert_eq!(v[1], 4.0); // 2.5 * 2 = 5, clamped
}

#[test]
fn fused_and_unfused_modconv_agree() {
    tch::manual_seed(1);
    let opts = (Kind::Float, tch::Device::Cpu);
    let f = setup_filter(&[1.0, 3.0, 3.0, 1.0], tch::Device::Cpu);
    let x = Tensor::randn([3, 4, 8, 8], opts);
    let w = Tensor::randn([5, 4, 3, 3], opts);
    let s = Tensor::randn([3, 4], opts);
    for (up, flip) in [(1, true), (2, false)] {
        let spec =
            |mode| ModConvSpec { up, padding: 1, resample_filter: Some(&f), demodulate: true, flip_weight: flip, mode };
        let a = modulated_conv2d(&x, &w, &s, None, &spec(ModConv::Fused), &BiasAct::NONE);
        let b = modulated_conv2d(&x, &w, &s, None, &spec(ModConv::Unfused), &BiasAct::NONE);
        assert_eq!(a.size(), vec![3, 5, 8 * up, 8 * up]);
        let d = (&a - &b).abs().max().double_value(&[]);
        assert!(d < 1e-4, "up={up}: {d}");
    }
}
