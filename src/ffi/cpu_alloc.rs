//! The caching CPU allocator of `cpu_alloc.cpp`: large tensors in their own mappings, reused by size, with a bound
//! on what is kept. `sg2` installs it at start-up (`util::tune_allocators`); its counters feed `sg2 bench train`.

/// Counters of the large-block allocator, in bytes (blocks mapped and reuses are counts).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Large tensors alive now.
    pub live: u64,
    /// The most `live` has been since the last [`reset_peaks`].
    pub peak_live: u64,
    /// Freed large blocks kept for reuse.
    pub cached: u64,
    /// The most live + cached has been since the last [`reset_peaks`].
    pub peak_mapped: u64,
    /// Allocations given a new mapping.
    pub maps: u64,
    /// Allocations given a kept block of their size.
    pub reuses: u64,
    /// Allocations given a kept block of another size, resized.
    pub resizes: u64,
}

extern "C" {
    fn sg2_cpu_alloc_install(threshold: usize, slack: f64, floor: usize);
    fn sg2_cpu_alloc_stats(out: *mut u64);
    fn sg2_cpu_alloc_reset_peaks();
    fn sg2_cpu_alloc_release_cached();
}

/// Makes the caching allocator libtorch's CPU allocator: tensors of at least `threshold` bytes get their own
/// mappings, and alive + kept stays within max(peak alive * (1 + slack), peak alive + floor). Calling it again
/// changes the settings.
pub fn install(threshold: usize, slack: f64, floor: usize) {
    unsafe { sg2_cpu_alloc_install(threshold, slack, floor) }
}

pub fn stats() -> AllocStats {
    let mut v = [0u64; 7];
    unsafe { sg2_cpu_alloc_stats(v.as_mut_ptr()) };
    AllocStats { live: v[0], peak_live: v[1], cached: v[2], peak_mapped: v[3], maps: v[4], reuses: v[5], resizes: v[6] }
}

/// Starts the peak counters again from the current values.
pub fn reset_peaks() {
    unsafe { sg2_cpu_alloc_reset_peaks() }
}

/// Returns every cached block to the system.
pub fn release_cached() {
    unsafe { sg2_cpu_alloc_release_cached() }
}
