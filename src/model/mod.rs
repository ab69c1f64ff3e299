//! The StyleGAN2 networks (names, shapes and numbers as stylegan2-ada-pytorch's `training/networks.py`) and their
//! checkpoints.

pub mod checkpoint;
pub mod discriminator;
pub mod generator;
pub mod import;
pub mod mapping;
pub mod pickle;
pub mod summary;
pub mod synthesis;

pub use discriminator::Discriminator;
pub use generator::Generator;
pub use mapping::{slerp, Space};
pub use synthesis::NoiseMode;
