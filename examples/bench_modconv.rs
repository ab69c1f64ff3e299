//! Inference speed of the two modulated-convolution forms (grouped "fused" and shared-weight "unfused") for a
//! randomly initialised config-f generator on the CPU, alternating the two in one process; BENCHMARKS.md records
//! its output. `cargo run --release --example bench_modconv -- RES BATCH REPS [small]` (`small`: fmap_base 1024,
//! fmap_max 64, two mapping layers, as the 32x32 training benchmark).
use sg2::model::{Generator, NoiseMode};
use sg2::nn::ModConv;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn main() {
    sg2::util::tune_allocators();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: i64| args.get(i).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (res, batch, reps) = (arg(0, 32), arg(1, 32), arg(2, 5));
    let mut sets = vec![format!("model.resolution={res}")];
    if args.get(3).map(String::as_str) == Some("small") {
        sets.extend(["model.fmap_base=1024", "model.fmap_max=64", "model.mapping_layers=2"].map(String::from));
    }
    let cfg = sg2::config::load(std::path::Path::new("configs/config-f.toml"), &sets).expect("config");
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let mut g = Generator::new(&vs.root(), &cfg.model);
    let mut time = |mode: ModConv| {
        g.modconv = Some(mode);
        let t = Instant::now();
        for _ in 0..reps {
            let z = Tensor::randn([batch, cfg.model.z_dim as i64], (Kind::Float, Device::Cpu));
            let _ = tch::no_grad(|| g.forward(&z, None, 1.0, NoiseMode::Const));
        }
        t.elapsed().as_secs_f64() * 1000.0 / reps as f64
    };
    time(ModConv::Fused);
    time(ModConv::Unfused);
    println!("{res}x{res}, batch {batch}, {} threads: ms per batch", tch::get_num_threads());
    for round in 1..=3 {
        let (f, u) = (time(ModConv::Fused), time(ModConv::Unfused));
        println!("round {round}: fused {f:.1}  unfused {u:.1}  ({:.2}x)", f / u);
    }
}
