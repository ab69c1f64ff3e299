//! The training loop, losses and logging.
