//! Calls into libtorch that tch does not expose, through the small C++ files beside this one (compiled by build.rs
//! against the same libtorch headers): the TF32 switches here, the c10d bridge in `c10d`. Errors come back as Rust
//! errors with libtorch's message.

pub mod adam;
pub mod c10d;
pub mod cpu_alloc;
pub mod fused;
pub mod wino;

use anyhow::{bail, Result};
use std::os::raw::{c_char, c_int};

extern "C" {
    fn sg2_leaky_relu(
        x: *mut torch_sys::C_tensor,
        slope: f64,
        out: *mut *mut torch_sys::C_tensor,
        err: *mut c_char,
        len: usize,
    ) -> c_int;
    fn sg2_set_allow_tf32(allow: c_int, err: *mut c_char, len: usize) -> c_int;
    fn sg2_allow_tf32(op: c_int, err: *mut c_char, len: usize) -> c_int;
}

/// Runs a C entry point with an error buffer; a negative return becomes an error with the buffer's message.
pub(crate) fn call(what: &str, f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<c_int> {
    let mut buf = vec![0 as c_char; 1024];
    let rc = f(buf.as_mut_ptr(), buf.len());
    if rc < 0 {
        let msg = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
        let first = msg.lines().next().unwrap_or("unknown error").to_string();
        bail!("{what}: {first}");
    }
    Ok(rc)
}

/// `leaky_relu(x, slope)`, differentiable to any order. Panics on a libtorch failure (out of memory), as tch's own
/// ops do.
pub fn leaky_relu(x: &tch::Tensor, slope: f64) -> tch::Tensor {
    let mut out: *mut torch_sys::C_tensor = std::ptr::null_mut();
    call("leaky_relu", |e, n| unsafe { sg2_leaky_relu(x.as_ptr() as *mut _, slope, &mut out, e, n) })
        .unwrap_or_else(|e| panic!("{e}"));
    unsafe { tch::Tensor::from_ptr(out) }
}

/// Allows or forbids TF32 for CUDA matmuls and convolutions (process-wide). The official training and metrics run
/// with both off; libtorch's default lets cuDNN convolutions use TF32 on Ampere and later GPUs.
pub fn set_allow_tf32(allow: bool) -> Result<()> {
    call("setting TF32", |e, n| unsafe { sg2_set_allow_tf32(allow as c_int, e, n) })?;
    Ok(())
}

/// Whether TF32 is allowed for CUDA (matmul, convolution).
pub fn allow_tf32() -> Result<(bool, bool)> {
    let m = call("reading TF32", |e, n| unsafe { sg2_allow_tf32(0, e, n) })?;
    let c = call("reading TF32", |e, n| unsafe { sg2_allow_tf32(1, e, n) })?;
    Ok((m == 1, c == 1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn tf32_setting_is_applied_and_read_back() {
        super::set_allow_tf32(true).unwrap();
        assert_eq!(super::allow_tf32().unwrap(), (true, true));
        super::set_allow_tf32(false).unwrap();
        assert_eq!(super::allow_tf32().unwrap(), (false, false));
    }
}
