//! Building blocks: equalized-learning-rate layers and the official custom ops (bias_act, upfirdn2d,
//! conv2d_resample, modulated convolution) as plain libtorch expressions.

pub mod layers;
pub mod ops;

pub use layers::{Conv2dLayer, FullyConnected};
pub use ops::{Act, ModConv};
