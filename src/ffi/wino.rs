//! The Winograd F(4x4, 3x3) convolution of `wino.cpp`: 3x3, stride 1, padding 1, fp32 on the CPU.

use super::call;
use std::os::raw::{c_char, c_int};
use tch::Tensor;

type Raw = *mut torch_sys::C_tensor;

extern "C" {
    fn sg2_wino_conv3x3(x: Raw, w: Raw, out: *mut Raw, err: *mut c_char, len: usize) -> c_int;
}

/// `conv2d(x, w, padding 1)` as a differentiable op whose forward and gradients (to second order) run by Winograd's
/// minimal filtering (2.25x fewer multiplications than the direct convolution, float results within a few 1e-6 of
/// the direct ones relative to the output's scale); None where it does not apply or does not pay (not fp32 on the
/// CPU, not a 3x3 weight, images under 8x8): the caller then convolves directly.
pub fn conv3x3(x: &Tensor, w: &Tensor) -> Option<Tensor> {
    let mut out: Raw = std::ptr::null_mut();
    let rc = call("winograd convolution", |e, n| unsafe {
        sg2_wino_conv3x3(x.as_ptr() as Raw, w.as_ptr() as Raw, &mut out, e, n)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    (rc == 1).then(|| unsafe { Tensor::from_ptr(out) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn direct(x: &Tensor, w: &Tensor) -> Tensor {
        x.conv2d(w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)
    }

    fn channels_last(x: Tensor) -> Tensor {
        x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
    }

    /// max |a - b| over max |b|, both in double.
    fn rel(a: &Tensor, b: &Tensor) -> f64 {
        let b = b.to_kind(Kind::Double);
        let d = (a.to_kind(Kind::Double) - &b).abs().max().double_value(&[]);
        d / b.abs().max().double_value(&[]).max(1e-30)
    }

    /// Shapes that reach every path: tiles cut by the border (sizes not a multiple of 4), channel counts that are
    /// not a multiple of the 16-channel vector block, C != O, tile counts that are not a multiple of the 64-tile
    /// block (and below one block), layouts other than channels-last.
    const SHAPES: [(i64, i64, i64, i64, i64); 6] = [
        (2, 5, 7, 9, 11),
        (3, 16, 16, 8, 8),
        (2, 20, 33, 13, 10),
        (1, 3, 64, 16, 16),
        (5, 48, 24, 17, 8),
        (4, 32, 32, 32, 32),
    ];

    #[test]
    fn forward_and_gradients_match_the_direct_convolution() {
        tch::manual_seed(3);
        for (i, &(n, c, o, h, w)) in SHAPES.iter().enumerate() {
            let x = Tensor::randn([n, c, h, w], (Kind::Float, Device::Cpu));
            let x = if i % 2 == 0 { channels_last(x) } else { x };
            let x = x.set_requires_grad(true);
            let wt = (Tensor::randn([o, c, 3, 3], (Kind::Float, Device::Cpu)) / ((c * 9) as f64).sqrt())
                .set_requires_grad(true);
            let y = conv3x3(&x, &wt).expect("an fp32 3x3 convolution of 8x8 or more applies");
            let r = direct(&x, &wt);
            assert_eq!(y.size(), r.size());
            // Double precision is the referee: Winograd's extra rounding stays within a few 1e-6 of the scale.
            let exact = direct(&x.to_kind(Kind::Double), &wt.to_kind(Kind::Double));
            let (e_wino, e_direct) = (rel(&y, &exact), rel(&r, &exact));
            assert!(e_wino < 2e-5, "{:?}: forward off by {e_wino} (direct {e_direct})", SHAPES[i]);
            let gy = Tensor::randn(y.size(), (Kind::Float, Device::Cpu));
            let g = Tensor::run_backward(&[(&y * &gy).sum(Kind::Float)], &[&x, &wt], false, false);
            let gr = Tensor::run_backward(&[(&r * &gy).sum(Kind::Float)], &[&x, &wt], false, false);
            for (k, name) in ["input", "weight"].iter().enumerate() {
                let e = rel(&g[k], &gr[k]);
                assert!(e < 2e-5, "{:?}: {name} gradient off by {e}", SHAPES[i]);
            }
        }
    }

    /// The first-order gradients of <y, gy> w.r.t. `grads_of` (with a graph), weighted by fixed random tensors,
    /// summed, and differentiated w.r.t. x, w and gy: what R1 and path length do to a convolution.
    fn second_order(y: &Tensor, x: &Tensor, w: &Tensor, grads_of: &[&Tensor]) -> Vec<Tensor> {
        // Drawn by shape (randn_like would follow each tensor's memory layout, which differs between the two).
        let randn = |t: &Tensor| Tensor::randn(t.size(), (Kind::Float, Device::Cpu));
        tch::manual_seed(9);
        let gy = randn(y).set_requires_grad(true);
        let g1 = Tensor::run_backward(&[(y * &gy).sum(Kind::Float)], grads_of, true, true);
        let total = g1.iter().map(|g| (g * randn(g)).sum(Kind::Float)).reduce(|a, b| a + b).unwrap();
        Tensor::run_backward(&[total], &[x, w, &gy], true, false)
    }

    #[test]
    fn gradients_of_gradients_match_the_direct_convolution() {
        tch::manual_seed(5);
        // 12x12: the weight gradient by ATen; 16x16 and 18x20: by Winograd.
        for (n, c, o, h, w) in [(3, 16, 8, 12, 12), (2, 16, 24, 16, 16), (2, 5, 6, 18, 20)] {
            let x = channels_last(Tensor::randn([n, c, h, w], (Kind::Float, Device::Cpu))).set_requires_grad(true);
            let wt = (Tensor::randn([o, c, 3, 3], (Kind::Float, Device::Cpu)) * 0.1).set_requires_grad(true);
            let ours_y = conv3x3(&x, &wt).unwrap();
            let direct_y = direct(&x, &wt);
            // Only the input gradient (R1, path length), then both.
            for (k, grads_of) in [vec![&x], vec![&x, &wt]].iter().enumerate() {
                let ours = second_order(&ours_y, &x, &wt, grads_of);
                let reference = second_order(&direct_y, &x, &wt, grads_of);
                for (i, (a, r)) in ours.iter().zip(&reference).enumerate() {
                    assert_eq!(a.defined(), r.defined(), "{:?} case {k} output {i}", (n, c, o, h, w));
                    if a.defined() {
                        let e = rel(a, r);
                        assert!(e < 2e-5, "{:?} case {k} output {i}: off by {e}", (n, c, o, h, w));
                    }
                }
            }
        }
    }

    #[test]
    fn it_declines_what_it_does_not_cover() {
        let x = Tensor::randn([2, 4, 16, 16], (Kind::Float, Device::Cpu));
        assert!(conv3x3(&x, &Tensor::randn([4, 4, 1, 1], (Kind::Float, Device::Cpu))).is_none(), "1x1 weight");
        assert!(conv3x3(&x, &Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu))).is_none(), "channel mismatch");
        let w = Tensor::randn([4, 4, 3, 3], (Kind::Float, Device::Cpu));
        assert!(conv3x3(&x.to_kind(Kind::Double), &w.to_kind(Kind::Double)).is_none(), "double");
        assert!(conv3x3(&x.narrow(2, 0, 4).narrow(3, 0, 4), &w).is_none(), "4x4 images (direct is faster)");
        assert!(conv3x3(&x, &w).is_some());
    }
}
