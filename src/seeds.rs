//! Seed list parsing.
