//! The training loop, losses and logging.

pub mod tensorboard;
