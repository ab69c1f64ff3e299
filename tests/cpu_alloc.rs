//! The caching CPU allocator (`sg2::ffi::cpu_alloc`): tensors keep their values, a freed block serves the next
//! tensor of its size, a kept block of another size is resized rather than a new one mapped once the budget is
//! reached, kept blocks beyond the budget are returned, and small tensors bypass it. One test in its own binary:
//! the allocator is process-wide and its counters would see other tests' tensors.

use sg2::ffi::cpu_alloc::{self, AllocStats};
use tch::{Kind, Tensor};

const MIB: usize = 1 << 20;

/// A float tensor of `bytes` filled with `v`.
fn filled(bytes: usize, v: f64) -> Tensor {
    Tensor::full([(bytes / 4) as i64], v, (Kind::Float, tch::Device::Cpu))
}

fn block(mib: usize, v: f64) -> Tensor {
    filled(mib * MIB, v)
}

fn sum(t: &Tensor) -> f64 {
    t.sum(Kind::Float).double_value(&[]) // exact: integer partial sums below 2^24
}

fn delta(a: AllocStats, b: AllocStats) -> (u64, u64, u64) {
    (b.maps - a.maps, b.reuses - a.reuses, b.resizes - a.resizes)
}

#[test]
fn blocks_are_reused_resized_and_bounded() {
    // No slack, no floor: kept blocks may only fill what the most memory ever alive (5 MiB below) allows.
    cpu_alloc::install(MIB, 0.0, 0);
    let s0 = cpu_alloc::stats();
    let a = block(2, 1.0);
    let b = block(3, 2.0);
    let s1 = cpu_alloc::stats();
    assert_eq!(delta(s0, s1), (2, 0, 0));
    assert_eq!(s1.live - s0.live, 5 * MIB as u64);

    // Small tensors are libtorch's: the counters do not move.
    let small = Tensor::ones([1000], (Kind::Float, tch::Device::Cpu));
    assert_eq!(sum(&small), 1000.0);
    assert_eq!(delta(s1, cpu_alloc::stats()), (0, 0, 0));

    // A freed block of the same size is handed out again, and the new tensor holds its own values.
    let first = a.data_ptr();
    drop(a);
    assert_eq!(cpu_alloc::stats().cached - s0.cached, 2 * MIB as u64);
    let c = block(2, 3.0);
    assert_eq!(c.data_ptr(), first);
    assert_eq!(delta(s1, cpu_alloc::stats()), (0, 1, 0));
    assert_eq!(sum(&c), 3.0 * (2 * MIB / 4) as f64);
    assert_eq!(sum(&b), 2.0 * (3 * MIB / 4) as f64);

    // Both freed: 5 MiB kept. A 4 MiB tensor would break the 5 MiB budget with a new mapping, so the closest kept
    // block (3 MiB) grows to 4 MiB and the other one (2 MiB) is returned to stay within it.
    drop(b);
    drop(c);
    let s2 = cpu_alloc::stats();
    let d = block(4, 5.0);
    let s3 = cpu_alloc::stats();
    assert_eq!(delta(s2, s3), (0, 0, 1));
    assert_eq!((s3.live - s0.live, s3.cached), (4 * MIB as u64, s0.cached));
    assert_eq!(sum(&d), 5.0 * (4 * MIB / 4) as f64);

    // More than ever alive: a new mapping, and the budget grows with it.
    let e = block(8, 1.0);
    assert_eq!(delta(s3, cpu_alloc::stats()).0, 1);
    assert_eq!(sum(&e) + sum(&d), (8 * MIB / 4) as f64 + 5.0 * (4 * MIB / 4) as f64);
    drop(e);
    drop(d);

    // 12 MiB kept fill the budget (12 MiB were alive at once), so a 1.5 MiB tensor takes the head of the closest
    // kept block (4 MiB, not 8); the 8 MiB block stays.
    let s4 = cpu_alloc::stats();
    let f = filled(3 * MIB / 2, 7.0);
    let s5 = cpu_alloc::stats();
    assert_eq!(delta(s4, s5), (0, 0, 1));
    assert_eq!(s5.cached - s0.cached, 8 * MIB as u64);
    assert_eq!(sum(&f), 7.0 * (3 * MIB / 8) as f64);
    drop(f);

    // Everything kept goes back on request; the peak counters restart from what is alive.
    cpu_alloc::release_cached();
    assert_eq!(cpu_alloc::stats().cached, 0);
    cpu_alloc::reset_peaks();
    let s6 = cpu_alloc::stats();
    assert_eq!(s6.peak_live, s6.live);
    assert_eq!(s6.peak_mapped, s6.live);
}
