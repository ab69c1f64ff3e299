//! Per-layer tables of parameter counts and output shapes, like the official module summary.
