//! The training loader: epochs, shuffling, mirroring, labels, resume; and the inspection commands.

mod common;
use common::data::*;
use common::*;
use sg2::data::create::{create, CreateOptions};
use sg2::data::inspect;
use sg2::data::loader::{Loader, LoaderOptions};
use sg2::data::sources::mnist::Mnist;
use sg2::data::Dataset;
use std::sync::Arc;
use tch::{Device, Kind, Tensor};

/// An MNIST-style dataset of `n` images (labels kept), in shards of 3 records.
fn dataset(root: &std::path::Path, n: usize) -> Arc<Dataset> {
    let m = root.join("m");
    make_idx(&m, n, true);
    let dest = root.join("ds");
    let mut o = CreateOptions::new(&dest, 32);
    o.channels = Some(1);
    o.min_size = 0;
    o.progress = false;
    o.records_per_shard = Some(3);
    create(&mut Mnist::open(&m).unwrap(), &o).unwrap();
    Arc::new(Dataset::open(&dest).unwrap())
}

fn bytes(t: &Tensor) -> Vec<u8> {
    let t = t.contiguous();
    let mut v = vec![0u8; t.numel()];
    t.copy_data(&mut v, t.numel());
    v
}

/// Identifies which record (and whether flipped) each image of a batch is.
fn identify(ds: &Dataset, res: usize, img: &[u8]) -> (u64, bool) {
    for i in 0..ds.count {
        let r = ds.record(res, i);
        if r == img {
            return (i, false);
        }
        let flipped: Vec<u8> = r.chunks(res).flat_map(|row| row.iter().rev().copied().collect::<Vec<_>>()).collect();
        if flipped == img {
            return (i, true);
        }
    }
    panic!("image is no record of the dataset");
}

#[test]
fn every_record_once_per_epoch_shuffled_differently_with_labels() {
    let t = tempfile::tempdir().unwrap();
    let ds = dataset(t.path(), 12);
    let mut opts = LoaderOptions::new(4, 16);
    opts.seed = 11;
    let mut l = Loader::new(ds.clone(), opts, Device::Cpu).unwrap();
    let mut epochs = vec![];
    for _ in 0..2 {
        let mut seen = vec![];
        for _ in 0..3 {
            let (x, y) = l.next_batch().unwrap();
            assert_eq!(x.size(), [4, 1, 16, 16]);
            assert_eq!(x.kind(), Kind::Uint8);
            let y = y.expect("labels");
            assert_eq!((y.size(), y.kind()), (vec![4], Kind::Int64));
            let data = bytes(&x);
            for (k, img) in data.chunks(256).enumerate() {
                let (i, flipped) = identify(&ds, 16, img);
                assert!(!flipped || img == ds.record(16, i), "no mirroring unless asked");
                assert_eq!(y.int64_value(&[k as i64]), ds.label(i).unwrap() as i64);
                seen.push(i);
            }
        }
        let mut sorted = seen.clone();
        sorted.sort();
        assert_eq!(sorted, (0..12).collect::<Vec<_>>(), "each record once per epoch");
        epochs.push(seen);
    }
    assert_ne!(epochs[0], epochs[1], "a new order each epoch");
    assert_ne!(epochs[0], (0..12).collect::<Vec<_>>(), "shuffled");
}

/// Ranks of a data-parallel group take interleaved, disjoint shares of the one-process batches (record k of each
/// global batch goes to rank k % world, mirroring included), and their states stay equal to the one process's.
#[test]
fn ranks_take_disjoint_interleaved_shares_of_the_global_batch() {
    let t = tempfile::tempdir().unwrap();
    let ds = dataset(t.path(), 7);
    let opts = |rank, world| {
        let mut o = LoaderOptions::new(6, 16);
        o.seed = 5;
        o.mirror = true;
        (o.rank, o.world) = (rank, world);
        o
    };
    let mut one = Loader::new(ds.clone(), opts(0, 1), Device::Cpu).unwrap();
    let mut ranks: Vec<Loader> = (0..3).map(|r| Loader::new(ds.clone(), opts(r, 3), Device::Cpu).unwrap()).collect();
    for _ in 0..4 {
        let (x, y) = one.next_batch().unwrap();
        let whole: Vec<Vec<u8>> = bytes(&x).chunks(256).map(|c| c.to_vec()).collect();
        for (r, l) in ranks.iter_mut().enumerate() {
            let (xr, yr) = l.next_batch().unwrap();
            assert_eq!(xr.size(), [2, 1, 16, 16]);
            let share: Vec<Vec<u8>> = bytes(&xr).chunks(256).map(|c| c.to_vec()).collect();
            assert_eq!(share, vec![whole[r].clone(), whole[r + 3].clone()], "rank {r}");
            let labels = y.as_ref().unwrap().index_select(0, &Tensor::from_slice(&[r as i64, r as i64 + 3]));
            assert!(yr.unwrap().equal(&labels));
            assert_eq!(l.state(), one.state());
        }
    }
    let mut bad = opts(0, 4);
    bad.batch = 6;
    let err = Loader::new(ds, bad, Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("batch 6 cannot be split across 4 ranks"), "{err}");
}

#[test]
fn unshuffled_batches_run_across_epochs_in_order() {
    let t = tempfile::tempdir().unwrap();
    let ds = dataset(t.path(), 5);
    let mut opts = LoaderOptions::new(3, 32);
    opts.shuffle = false;
    let mut l = Loader::new(ds.clone(), opts, Device::Cpu).unwrap();
    let mut order = vec![];
    for _ in 0..4 {
        let (x, _) = l.next_batch().unwrap();
        order.extend(bytes(&x).chunks(1024).map(|img| identify(&ds, 32, img).0));
    }
    assert_eq!(order, vec![0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]);
    let s = l.state();
    assert_eq!((s.epoch, s.position), (2, 2));
}

#[test]
fn mirror_flips_about_half_deterministically() {
    let t = tempfile::tempdir().unwrap();
    let ds = dataset(t.path(), 10);
    let mut opts = LoaderOptions::new(5, 8);
    opts.mirror = true;
    opts.seed = 3;
    let run = |opts: &LoaderOptions| {
        let mut l = Loader::new(ds.clone(), opts.clone(), Device::Cpu).unwrap();
        (0..20).flat_map(|_| bytes(&l.next_batch().unwrap().0)).collect::<Vec<u8>>()
    };
    let a = run(&opts);
    assert_eq!(a, run(&opts), "same seed, same batches");
    let flips = a.chunks(64).filter(|img| identify(&ds, 8, img).1).count();
    // 100 draws of a fair coin: 50 +- 15 covers 99.7%.
    assert!((35..=65).contains(&flips), "{flips} of 100 mirrored");
    opts.seed = 4;
    assert_ne!(a, run(&opts));
}

#[test]
fn resume_continues_with_the_same_batches() {
    let t = tempfile::tempdir().unwrap();
    let ds = dataset(t.path(), 7);
    let mut opts = LoaderOptions::new(3, 16);
    opts.mirror = true;
    opts.seed = 99;
    opts.workers = 3;
    opts.prefetch = 5;
    let mut full = Loader::new(ds.clone(), opts.clone(), Device::Cpu).unwrap();
    let all: Vec<Vec<u8>> = (0..9).map(|_| bytes(&full.next_batch().unwrap().0)).collect();
    let mut first = Loader::new(ds.clone(), opts.clone(), Device::Cpu).unwrap();
    for b in all.iter().take(4) {
        assert_eq!(&bytes(&first.next_batch().unwrap().0), b);
    }
    let state = first.state();
    drop(first);
    // Through JSON, as a checkpoint stores it.
    let state = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
    let mut resumed = Loader::resume(ds.clone(), opts, Device::Cpu, state).unwrap();
    for b in &all[4..] {
        assert_eq!(&bytes(&resumed.next_batch().unwrap().0), b);
    }
}

#[test]
fn loader_rejects_bad_options() {
    let t = tempfile::tempdir().unwrap();
    let ds = dataset(t.path(), 4);
    let err = Loader::new(ds.clone(), LoaderOptions::new(2, 64), Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("no level 64"), "{err}");
    assert!(Loader::new(ds, LoaderOptions::new(0, 32), Device::Cpu).is_err());
}

#[test]
fn info_verify_extract_grid() {
    let t = tempfile::tempdir().unwrap();
    let ds = dataset(t.path(), 6);
    let text = inspect::info(&ds);
    assert!(text.contains("images       6") && text.contains("10 classes") && text.contains("32x32"), "{text}");
    let report = inspect::verify(&ds.path, false).unwrap();
    assert!(report.contains("OK") && report.contains("24 records"), "{report}");

    // extract: PNGs by record index that decode back to the records.
    let out = t.path().join("png");
    let (ok, stdout, err) =
        run_sg2(&["dataset-tool", "extract", s(&ds.path), "--dest", s(&out), "--resolution", "8", "--max-images", "4"]);
    assert!(ok, "{err}");
    assert!(stdout.contains("wrote 4"), "{stdout}");
    for i in 0..4u64 {
        let img = image::open(out.join(format!("{i:08}.png"))).unwrap().into_luma8();
        assert_eq!(img.dimensions(), (8, 8));
        assert_eq!(img.as_raw(), ds.record(8, i));
    }
    assert!(!out.join("00000004.png").exists());

    // grid: 5 images of 16x16 in a 3x2 sheet, in record order.
    let g = t.path().join("grid.png");
    let (ok, _, err) =
        run_sg2(&["dataset-tool", "grid", s(&ds.path), "--out", s(&g), "--resolution", "16", "--count", "5"]);
    assert!(ok, "{err}");
    let img = image::open(&g).unwrap().into_luma8();
    assert_eq!(img.dimensions(), (48, 32));
    for y in 0..16 {
        for x in 0..16 {
            assert_eq!(img.get_pixel(16 + x, 16 + y).0[0], ds.record(16, 4)[(y * 16 + x) as usize]);
            assert_eq!(img.get_pixel(32 + x, 16 + y).0[0], 0, "empty cell");
        }
    }

    let (ok, stdout, _) = run_sg2(&["dataset-tool", "info", s(&ds.path)]);
    assert!(ok && stdout.contains("fingerprint"), "{stdout}");

    // verify names every corrupted shard; info and open still work (sizes match), verify does not.
    let files = &ds.manifest.shards;
    let shard = ds.path.join(&files[1].file);
    let mut b = std::fs::read(&shard).unwrap();
    b[5] ^= 0xff;
    std::fs::write(&shard, &b).unwrap();
    let last = ds.path.join(&files[files.len() - 1].file);
    let mut c = std::fs::read(&last).unwrap();
    c[0] ^= 0x01;
    std::fs::write(&last, &c).unwrap();
    let (ok, _, err) = run_sg2(&["dataset-tool", "verify", s(&ds.path)]);
    let want = format!("2 of {} files fail their checksum (corrupt): {} (sha256 ", files.len() + 1, files[1].file);
    assert!(!ok && err.contains(&want) && err.contains(&files[files.len() - 1].file), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // A truncated shard, one with bytes appended or a folder in its place is caught when opening.
    std::fs::write(&shard, &b[..10]).unwrap();
    let (ok, _, err) = run_sg2(&["dataset-tool", "info", s(&ds.path)]);
    assert!(!ok && err.contains("(truncated)"), "{err}");
    std::fs::write(&shard, [&b[..], b"x"].concat()).unwrap();
    let (ok, _, err) = run_sg2(&["dataset-tool", "info", s(&ds.path)]);
    assert!(!ok && err.contains("(longer than written: replaced or appended to)"), "{err}");
    std::fs::remove_file(&shard).unwrap();
    std::fs::create_dir(&shard).unwrap();
    let (ok, _, err) = run_sg2(&["dataset-tool", "info", s(&ds.path)]);
    assert!(!ok && err.contains(&format!("{}: not a regular file", shard.display())), "{err}");
    let (ok, _, err) = run_sg2(&["dataset-tool", "info", s(t.path())]);
    assert!(!ok && err.contains("not an sg2 dataset"), "{err}");
}
