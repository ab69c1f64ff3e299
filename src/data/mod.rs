//! Datasets: sources -> transform -> shards -> loader.
//!
//! `sources` yield images in a fixed order, `transform` crops, resizes and builds the levels of detail exactly as
//! the official tool, `create` runs that in parallel into `shards` (the on-disk format, docs/SHARDS.md), which
//! `loader` feeds to training. `inspect` and `bench` serve the command line.

pub mod bench;
pub mod create;
pub mod dest;
pub mod inspect;
pub mod loader;
pub mod shards;
pub mod sources;
pub mod transform;

pub use shards::Dataset;
