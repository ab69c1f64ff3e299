//! sg2: StyleGAN2 on libtorch.
//!
//! Data flows one way: `data` (sources -> transform -> shards -> loader) -> `model` -> `train` -> checkpoint
//! (`model::checkpoint`) -> `generate` / `metrics`. The `cli` module only parses options and calls these.

// On tensors `x = x + y` allocates while `x += y` writes in place, which matters for autograd and for tensors
// shared with the caller; the choice is deliberate at each site.
#![allow(clippy::assign_op_pattern)]

pub mod cli;
pub mod config;
pub mod data;
pub mod device;
pub mod dist;
pub mod ffi;
pub mod generate;
pub mod image_io;
pub mod metrics;
pub mod model;
pub mod nn;
pub mod npz;
pub mod project;
pub mod rng;
pub mod seeds;
pub mod train;
pub mod util;
