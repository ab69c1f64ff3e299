//! Datasets: sources -> transform -> shards -> loader.
