//! The fused CPU epilogue of `fused.cpp`: `clamp(act(x * scale + noise + bias) * gain)` as one autograd op.

use super::call;
use std::os::raw::{c_char, c_int};
use tch::Tensor;

type Raw = *mut torch_sys::C_tensor;

extern "C" {
    fn sg2_modulate(x: Raw, s: Raw, bf16: c_int, out: *mut Raw, err: *mut c_char, len: usize) -> c_int;
    fn sg2_fused_bias_act_applies(x: Raw, s: Raw, noise: Raw, b: Raw) -> c_int;
    fn sg2_fused_bias_act(
        x: Raw,
        s: Raw,
        noise: Raw,
        b: Raw,
        lrelu: c_int,
        gain: f64,
        clamp: f64,
        out: *mut Raw,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
}

fn raw(t: Option<&Tensor>) -> Raw {
    t.map_or(std::ptr::null_mut(), |t| t.as_ptr() as Raw)
}

/// The fused op on these operands, or None where it does not apply (not CPU fp32, not dense channels-last or
/// [N, C], shapes that do not broadcast as the layers' do): the caller then runs the unfused chain.
pub fn bias_act(
    x: &Tensor,
    scale: Option<&Tensor>,
    noise: Option<&Tensor>,
    bias: Option<&Tensor>,
    lrelu: bool,
    gain: f64,
    clamp: Option<f64>,
) -> Option<Tensor> {
    let (xr, sr, nr, br) = (raw(Some(x)), raw(scale), raw(noise), raw(bias));
    if unsafe { sg2_fused_bias_act_applies(xr, sr, nr, br) } != 1 {
        return None;
    }
    let mut out: Raw = std::ptr::null_mut();
    let c = clamp.unwrap_or(-1.0);
    // The operands were checked above; an error here is a libtorch failure (out of memory): raise it as tch does.
    call("fused bias_act", |e, n| unsafe {
        sg2_fused_bias_act(xr, sr, nr, br, lrelu as c_int, gain, c, &mut out, e, n)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    Some(unsafe { Tensor::from_ptr(out) })
}

/// `x * s[n, c]` (the unfused modulation) as one op, in bfloat16 when `bf16` (the input of a bf16 convolution);
/// None where it does not apply (not CPU fp32, not dense channels-last or [N, C]).
pub fn modulate(x: &Tensor, s: &Tensor, bf16: bool) -> Option<Tensor> {
    let mut out: Raw = std::ptr::null_mut();
    let rc = call("fused modulate", |e, n| unsafe {
        sg2_modulate(raw(Some(x)), raw(Some(s)), bf16 as c_int, &mut out, e, n)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    (rc == 1).then(|| unsafe { Tensor::from_ptr(out) })
}
