//! Seeds to images.
