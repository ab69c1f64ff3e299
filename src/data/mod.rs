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

/// SplitMix64: a small, well-mixed generator for shuffles and coin flips that must be reproducible from a seed.
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
