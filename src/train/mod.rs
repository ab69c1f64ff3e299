//! Training: the official StyleGAN2 loop (`loop`), its losses (`loss`), optimizer (`adam`), G_ema (`ema`),
//! snapshots and run folders (`snapshot`) and reporting (`log`). docs/TRAINING.md describes a run.

pub mod ada;
pub mod adam;
pub mod augment;
pub mod bench;
pub mod ema;
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
