//! numpy-compatible legacy RandomState.
