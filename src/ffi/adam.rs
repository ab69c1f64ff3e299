//! The one-pass Adam update of `adam.cpp` (beta1 = 0), bit for bit the ATen ops of `train::adam`.

use super::call;
use std::os::raw::{c_char, c_int};
use tch::Tensor;

type Raw = *mut torch_sys::C_tensor;

extern "C" {
    fn sg2_adam_beta1_zero(
        p: *const Raw,
        g: *const Raw,
        m: *const Raw,
        v: *const Raw,
        n: i64,
        beta2: f64,
        step_size: f64,
        bc2_sqrt: f64,
        eps: f64,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
}

/// One update of every parameter with a defined gradient (`slots`: parameter, exp_avg, exp_avg_sq; `grads` in the
/// same order). A gradient in another memory layout (a convolution's, channels-last) is copied to the parameter's
/// first. False, with nothing changed, when an operand is not a dense CPU float tensor of its parameter's size.
pub fn step_beta1_zero(
    slots: &[(&Tensor, &Tensor, &Tensor)],
    grads: &[Tensor],
    beta2: f64,
    step_size: f64,
    bc2_sqrt: f64,
    eps: f64,
) -> bool {
    let raw = |t: &Tensor| t.as_ptr() as Raw;
    let p: Vec<Raw> = slots.iter().map(|s| raw(s.0)).collect();
    let m: Vec<Raw> = slots.iter().map(|s| raw(s.1)).collect();
    let v: Vec<Raw> = slots.iter().map(|s| raw(s.2)).collect();
    let dense: Vec<Tensor> = grads
        .iter()
        .map(|g| if g.defined() && !g.is_contiguous() { g.contiguous() } else { g.shallow_clone() })
        .collect();
    let g: Vec<Raw> = dense.iter().map(|g| if g.defined() { raw(g) } else { std::ptr::null_mut() }).collect();
    assert_eq!(g.len(), p.len(), "one gradient per parameter");
    let rc = call("Adam update", |e, n| unsafe {
        sg2_adam_beta1_zero(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            p.len() as i64,
            beta2,
            step_size,
            bc2_sqrt,
            eps,
            e,
            n,
        )
    })
    .unwrap_or_else(|e| panic!("{e}"));
    rc == 1
}
