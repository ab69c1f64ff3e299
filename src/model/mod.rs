//! The StyleGAN2 networks and their checkpoints.
