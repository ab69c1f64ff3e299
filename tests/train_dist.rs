//! Data-parallel training over c10d (Gloo, CPU): 2 ranks x batch 4 step like 1 rank x batch 8, the launcher, a
//! killed worker, and resuming a 2-process run with 1 process.

mod common;
use common::training::{tiny_config, tiny_dataset};
use common::*;
use sg2::dist::{Dist, DistEnv};
use sg2::model::NoiseMode;
use sg2::train::trainer::StepDraws;
use sg2::train::Trainer;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

/// Every variable of G, G_ema and D (parameters and buffers), by name.
fn variables(tr: &Trainer) -> BTreeMap<String, Tensor> {
    let mut out = BTreeMap::new();
    for (net, vs) in [("G", &tr.g_vs), ("G_ema", &tr.g_ema_vs), ("D", &tr.d_vs)] {
        for (k, v) in vs.variables() {
            out.insert(format!("{net}.{k}"), v.detach().copy());
        }
    }
    out
}

/// Rows `rank`, `rank + world`, ... of dim `dim`: a rank's share of a global batch (the loader's split).
fn share(t: &Tensor, dim: i64, rank: usize, world: usize) -> Tensor {
    let n = t.size()[dim as usize];
    let idx: Vec<i64> = (rank as i64..n).step_by(world).collect();
    t.index_select(dim, &Tensor::from_slice(&idx))
}

/// One step of the tiny network from the same initial weights, latents, noise and images; returns the variables
/// before and after, `pl_mean` and the images seen.
fn one_step(
    dist: Dist,
    reals: &Tensor,
    draws: &StepDraws,
) -> (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>, f64, u64) {
    // eps 1 makes Adam's first step continuous in the gradient (at the default eps it is lr * sign(g), which
    // rounding can flip where g is ~0), so weights compare as closely as the gradients they came from.
    let cfg = tiny_config(&[
        "training.batch=8",
        "training.style_mixing_prob=0",
        "training.adam_eps=1",
        "training.g_lr=0.5",
        "training.d_lr=0.5",
    ]);
    let (rank, world) = (dist.rank, dist.world);
    // libtorch's generator is process-wide: ranks initialising at once (threads here) would interleave their
    // draws and start from other weights than the one-process run.
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let mut tr = {
        let _one_at_a_time = INIT.lock().unwrap();
        Trainer::new(&cfg, Device::Cpu).unwrap()
    };
    tr.dist = Arc::new(dist);
    tr.noise_mode = NoiseMode::Const;
    tr.sync_from_main().unwrap();
    let before = variables(&tr);
    let mine = StepDraws {
        z: share(&draws.z, 1, rank, world),
        gen_c: None,
        pl_noise: draws.pl_noise.as_ref().map(|n| share(n, 0, rank, world)),
    };
    tr.step_with(&share(reals, 0, rank, world), None, Some(&mine)).unwrap();
    (before, variables(&tr), tr.pl_mean.double_value(&[]), tr.state.cur_nimg)
}

#[test]
fn two_ranks_of_four_step_like_one_rank_of_eight() {
    tch::manual_seed(3);
    let reals = Tensor::randint(256, [8, 1, 8, 8], (Kind::Uint8, Device::Cpu));
    // Gmain, Greg, Dmain, Dreg all run at minibatch 0; Greg takes the first 8 / pl_batch_shrink latents.
    let z = Tensor::randn([4, 8, 16], (Kind::Float, Device::Cpu));
    let pl_noise = Tensor::randn([4, 1, 8, 8], (Kind::Float, Device::Cpu)) / 8.0;
    let draws = StepDraws { z, gen_c: None, pl_noise: Some(pl_noise) };
    let (before, one, one_pl, one_nimg) = one_step(Dist::single(), &reals, &draws);

    let port = sg2::ffi::c10d::free_port().unwrap();
    let ranks: Vec<_> = (0..2)
        .map(|rank| {
            let (reals, z, pl) = (reals.copy(), draws.z.copy(), draws.pl_noise.as_ref().unwrap().copy());
            std::thread::spawn(move || {
                let env =
                    DistEnv { rank, local_rank: rank, world: 2, master_addr: "127.0.0.1".into(), master_port: port };
                let dist = Dist::join(&env, Duration::from_secs(120)).unwrap();
                // The ranks split the same global draws (and pl noise rows r, r + 2 are one process's rows 0..4).
                let draws = StepDraws { z, gen_c: None, pl_noise: Some(pl) };
                let (before, after, pl, nimg) = one_step(dist, &reals, &draws);
                let flat = |m: BTreeMap<String, Tensor>| {
                    m.into_iter()
                        .map(|(k, v)| (k, Vec::<f32>::try_from(v.reshape([-1])).unwrap()))
                        .collect::<BTreeMap<_, _>>()
                };
                (flat(before), flat(after), pl, nimg)
            })
        })
        .collect();
    let ranks: Vec<_> = ranks.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(one_nimg, 8);
    assert!((ranks[0].2 - one_pl).abs() <= 1e-6 * one_pl.abs().max(1.0), "pl_mean {} vs {one_pl}", ranks[0].2);
    let mut moved = 0;
    for (name, b) in &before {
        let b = Vec::<f32>::try_from(b.reshape([-1])).unwrap();
        let o = Vec::<f32>::try_from(one[name].reshape([-1])).unwrap();
        for (rank, (rb, ra, pl, nimg)) in ranks.iter().enumerate() {
            assert_eq!(rb[name], b, "{name}: rank {rank} starts from rank 0's weights");
            assert_eq!(*nimg, 8, "kimg counts the global batch");
            assert_eq!(*pl, ranks[0].2, "pl_mean is the same on every rank");
            // Compare the updates: |delta_ranks - delta_one| small against |delta_one|.
            let (mut diff, mut norm) = (0f64, 0f64);
            for i in 0..b.len() {
                let (d1, d2) = ((o[i] - b[i]) as f64, (ra[name][i] - b[i]) as f64);
                diff += (d1 - d2).powi(2);
                norm += d1.powi(2);
            }
            let (diff, norm) = (diff.sqrt(), norm.sqrt());
            assert!(diff <= 2e-4 * norm + 1e-7, "{name} rank {rank}: update differs by {diff:e} (norm {norm:e})");
            if rank == 0 && norm > 0.0 {
                moved += 1;
            }
        }
    }
    // Guard against a vacuous comparison: G, G_ema, D and w_avg all moved.
    assert!(moved > before.len() / 2, "only {moved} of {} variables changed", before.len());
    assert_ne!(ranks[0].1["G.mapping.w_avg"], Vec::<f32>::try_from(before["G.mapping.w_avg"].reshape([-1])).unwrap());
}

/// A config file for the tiny network with the global batch 8 and `extra` settings.
fn config_file(dir: &Path, extra: &[&str]) -> PathBuf {
    let mut sets = vec!["training.batch=8", "logging.snapshot_ticks=2", "logging.keep_snapshots=0"];
    sets.extend_from_slice(extra);
    let path = dir.join("tiny.toml");
    std::fs::write(&path, tiny_config(&sets).to_toml()).unwrap();
    path
}

fn run_folder(outdir: &Path) -> PathBuf {
    std::fs::read_dir(outdir).unwrap().map(|e| e.unwrap().path()).find(|p| p.is_dir()).expect("a run folder")
}

#[test]
fn a_two_process_run_resumes_with_one_process() {
    let t = tempfile::tempdir().unwrap();
    let data = tiny_dataset(t.path(), 40);
    let cfg = config_file(t.path(), &[]);
    let runs = t.path().join("runs");
    let base = ["train", "--config", s(&cfg), "--data", s(&data), "--outdir", s(&runs)];
    let mut two = base.to_vec();
    two.extend(["--kimg", "0.032", "--nproc-per-node", "2"]);
    let (ok, out, err) = run_sg2(&two);
    assert!(ok, "{err}");
    assert!(out.contains("world size 2 (4 images per process and step; rank 0 writes)"), "{out}");
    assert_eq!(out.matches("Exiting...").count(), 1, "only rank 0 prints: {out}");
    let dir = run_folder(&runs);
    assert!(dir.join("network-snapshot-000000_032.safetensors").exists());
    let entries: Vec<_> = std::fs::read_dir(&runs).unwrap().collect();
    assert_eq!(entries.len(), 1, "one run folder, written by rank 0");

    let mut one = base.to_vec();
    one.extend(["--kimg", "0.048", "--resume", "latest"]);
    let (ok, out, err) = run_sg2(&one);
    assert!(ok, "{err}");
    assert!(out.contains("at kimg 0.032"), "{out}");
    assert!(!out.contains("world size"), "{out}");
    let (_, st) = sg2::train::snapshot::load(&dir.join("network-snapshot-000000_048.safetensors")).unwrap();
    assert_eq!(st.cur_nimg, 48);
    // And back to two processes.
    let mut again = base.to_vec();
    again.extend(["--kimg", "0.064", "--resume", "latest", "--nproc-per-node", "2"]);
    let (ok, out, err) = run_sg2(&again);
    assert!(ok, "{err}");
    assert!(out.contains("at kimg 0.048") && out.contains("world size 2"), "{out}");
    assert!(dir.join("network-snapshot-000000_064.safetensors").exists());
}

/// The worker processes of launcher `pid`, by their RANK.
fn workers(pid: u32) -> BTreeMap<String, u32> {
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|c| {
            let c: u32 = c.parse().ok()?;
            let env = std::fs::read(format!("/proc/{c}/environ")).ok()?;
            let rank = env.split(|b| *b == 0).find_map(|kv| kv.strip_prefix(b"RANK="))?;
            Some((String::from_utf8_lossy(rank).into_owned(), c))
        })
        .collect()
}

#[test]
fn a_killed_worker_ends_the_run_and_the_last_snapshot_stays_valid() {
    let t = tempfile::tempdir().unwrap();
    let data = tiny_dataset(t.path(), 40);
    let cfg = config_file(t.path(), &["logging.snapshot_ticks=1"]);
    let runs = t.path().join("runs");
    let mut child = sg2_bin()
        .args(["train", "--config", s(&cfg), "--data", s(&data), "--outdir", s(&runs), "--kimg", "1000"])
        .args(["--nproc-per-node", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let latest = || std::fs::read_dir(&runs).ok().and_then(|_| sg2::train::snapshot::read_latest(&run_folder(&runs)));
    while latest().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(120), "no snapshot after 2 minutes");
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ranks = workers(child.id());
    assert_eq!(ranks.len(), 2, "{ranks:?}");
    unsafe { libc::kill(ranks["1"] as i32, libc::SIGKILL) };
    let killed = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "the launcher still runs 60 s after a worker died");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGKILL), "{err}");
    assert!(err.contains("worker rank 1 ended with signal 9: stopping the other workers"), "{err}");
    for pid in ranks.values() {
        assert!(
            !Path::new(&format!("/proc/{pid}/status")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap().contains("zombie"),
            "worker {pid} still runs"
        );
    }
    let snap = latest().expect("a snapshot");
    let (_, st) = sg2::train::snapshot::load(&snap).unwrap();
    assert!(st.cur_nimg >= 8);
}

#[test]
fn launch_and_environment_errors_are_one_line() {
    let t = tempfile::tempdir().unwrap();
    let data = tiny_dataset(t.path(), 8);
    let cfg = config_file(t.path(), &[]);
    let out = t.path().join("r");
    let args = ["train", "--config", s(&cfg), "--data", s(&data), "--outdir", s(&out)];
    let mut three = args.to_vec();
    three.extend(["--nproc-per-node", "3"]);
    let (ok, _, err) = run_sg2(&three);
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "error: training.batch = 8 cannot be split evenly across 3 processes (the batch is the total)"
    );
    let out = sg2_bin().args(args).env("RANK", "1").env("WORLD_SIZE", "2").env_remove("MASTER_ADDR").output().unwrap();
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "error: WORLD_SIZE=2 needs MASTER_ADDR (the host of rank 0)"
    );
    let mut two = args.to_vec();
    two.extend(["--nproc-per-node", "2"]);
    let out = sg2_bin().args(two).env("RANK", "0").env("WORLD_SIZE", "1").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("but RANK is already set"), "{err}");
}

/// A NaN on rank 1 alone: both ranks see it (the flags travel with the gradients), rank 0 reloads its snapshot and
/// sends it to rank 1, and the run continues with lower learning rates on both.
#[test]
fn a_nan_on_one_rank_rolls_back_every_rank() {
    let t = tempfile::tempdir().unwrap();
    let data = tiny_dataset(t.path(), 24);
    let port = sg2::ffi::c10d::free_port().unwrap();
    let out = t.path().join("runs");
    let handles: Vec<_> = (0..2)
        .map(|rank| {
            let (data, out) = (data.clone(), out.clone());
            std::thread::spawn(move || {
                let cfg = tiny_config(&[
                    "training.batch=8",
                    "training.nan_policy=\"rollback\"",
                    "training.rollback_lr_factor=0.5",
                    "training.total_kimg=0.032",
                ]);
                let mut o = sg2::train::TrainOptions::new(cfg, "tiny", &data, &out);
                let env =
                    DistEnv { rank, local_rank: rank, world: 2, master_addr: "127.0.0.1".into(), master_port: port };
                o.dist = Arc::new(Dist::join(&env, Duration::from_secs(120)).unwrap());
                if rank == 1 {
                    o.inject_nan = Some((2, sg2::train::loss::Phase::Dmain));
                }
                sg2::train::train(o).unwrap()
            })
        })
        .collect();
    let reps: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for r in &reps {
        assert_eq!((r.rollbacks, r.cur_nimg), (1, 32));
    }
    let run = reps[0].run_dir.clone().unwrap();
    let log = std::fs::read_to_string(run.join("log.txt")).unwrap();
    assert!(log.contains("non-finite Loss/D/loss") && log.contains("rollback: reloaded"), "{log}");
    let (_, st) = sg2::train::snapshot::load(reps[0].snapshot.as_ref().unwrap()).unwrap();
    assert_eq!(st.lr_factor, 0.5);
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 1, "rank 1 writes no folder");
}
