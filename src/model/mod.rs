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
pub use synthesis::NoiseMode;

impl std::str::FromStr for NoiseMode {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "const" => Ok(NoiseMode::Const),
            "random" => Ok(NoiseMode::Random),
            "none" => Ok(NoiseMode::None),
            other => anyhow::bail!("noise mode '{other}': expected const, random or none"),
        }
    }
}
