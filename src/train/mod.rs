//! Training: the official StyleGAN2 loop (`loop`), its losses (`loss`), optimizer (`adam`), G_ema (`ema`),
//! snapshots and run folders (`snapshot`) and reporting (`log`). docs/TRAINING.md describes a run.

pub mod ada;
pub mod adam;
pub mod augment;
pub mod bench;
pub mod ema;
pub mod interrupt;
pub mod log;
pub mod loss;
pub mod run;
pub mod snapshot;
pub mod tensorboard;
#[path = "loop.rs"]
pub mod train_loop;
pub mod trainer;

pub use train_loop::{train, Resume, TrainOptions, TrainReport};
pub use trainer::Trainer;

/// The process-wide precision switches as a training config sets them: TF32 on CUDA, bf16 and Winograd
/// convolutions on the CPU (`sg2 train` and `sg2 bench train` alike).
pub fn set_precision(t: &crate::config::TrainingConfig) -> anyhow::Result<()> {
    crate::ffi::set_allow_tf32(t.allow_tf32)?;
    crate::nn::ops::set_cpu_bf16(t.cpu_bf16);
    crate::nn::ops::set_cpu_winograd(t.cpu_winograd);
    Ok(())
}

/// Wall-clock seconds since `start`.
pub(crate) struct Clock(std::time::Instant);

impl Clock {
    pub(crate) fn start() -> Clock {
        Clock(std::time::Instant::now())
    }
    pub(crate) fn secs(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }
}
