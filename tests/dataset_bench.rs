//! Driver for the data benchmarks in release (`BENCHMARKS.md`):
//! `cargo test --release --test dataset_bench -- --ignored --nocapture`.
//! `SG2_BENCH_IMAGES` (default 2000) and `SG2_BENCH_RUNS` (default 3) scale it.

#[test]
#[ignore = "benchmark: run explicitly in release"]
fn bench_dataset_and_loader() {
    let images = std::env::var("SG2_BENCH_IMAGES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000);
    let runs = std::env::var("SG2_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    for run in 1..=runs {
        println!("run {run}");
        print!("{}", sg2::data::bench::bench_dataset(images, 256, None).unwrap());
        print!("{}", sg2::data::bench::bench_loader(256, 200, 32, None).unwrap());
    }
}
