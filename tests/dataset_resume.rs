//! Determinism, crash safety and resume of the create pipeline; a full disk.

mod common;
use anyhow::{bail, Result};
use common::data::*;
use common::s;
use sg2::data::create::{create, partial_path, CreateOptions};
use sg2::data::shards::{ShardWriter, JOURNAL, MANIFEST};
use sg2::data::sources::{mnist::Mnist, Item, Source};
use sg2::data::Dataset;
use std::path::Path;

fn opts(dest: &Path) -> CreateOptions {
    let mut o = CreateOptions::new(dest, 32);
    o.channels = Some(1);
    o.min_size = 0;
    o.progress = false;
    o.workers = 2;
    o.records_per_shard = Some(4);
    o
}

/// A source that fails from item `fail_at` on, as a crash would stop a run.
struct Failing {
    inner: Mnist,
    fail_at: u64,
}

impl Source for Failing {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn get(&mut self, index: u64) -> Result<Item> {
        if index >= self.fail_at {
            bail!("simulated failure at item {index}");
        }
        self.inner.get(index)
    }
    fn num_classes(&self) -> u32 {
        self.inner.num_classes()
    }
    fn describe(&self) -> serde_json::Value {
        self.inner.describe()
    }
}

#[test]
fn two_runs_give_identical_shards_and_shuffle_is_seeded() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("m");
    make_idx(&m, 30, true);
    let run = |name: &str, shuffle: bool, seed: u64, max: Option<u64>| {
        let dest = t.path().join(name);
        let mut o = opts(&dest);
        o.shuffle = shuffle;
        o.seed = seed;
        o.max_images = max;
        create(&mut Mnist::open(&m).unwrap(), &o).unwrap();
        Dataset::open(&dest).unwrap()
    };
    let (a, b) = (run("a", false, 0, None), run("b", false, 0, None));
    assert_eq!(a.manifest.shards, b.manifest.shards);
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(a.manifest.shards.len(), 8 * 4, "30 records in shards of 4, 4 levels");
    let (s1, s2, s3) = (run("s1", true, 5, None), run("s2", true, 5, None), run("s3", true, 6, None));
    assert_eq!(s1.manifest.shards, s2.manifest.shards);
    assert_ne!(s1.fingerprint(), s3.fingerprint());
    assert_ne!(s1.fingerprint(), a.fingerprint());
    // A shuffle is a permutation: same records and labels, another order.
    let recs = |d: &Dataset| {
        let mut v: Vec<(Vec<u8>, Option<u32>)> = (0..d.count).map(|i| (d.record(32, i).to_vec(), d.label(i))).collect();
        v.sort();
        v
    };
    assert_eq!(recs(&s1), recs(&a));
    assert_eq!(recs(&s3), recs(&a));
    // --max-images with --shuffle takes the first N of the shuffled order.
    let cut = run("cut", true, 5, Some(7));
    assert_eq!(cut.count, 7);
    for i in 0..7 {
        assert_eq!(cut.record(32, i), s1.record(32, i));
    }
}

#[test]
fn interrupted_run_resumes_to_the_same_dataset() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("m");
    make_idx(&m, 30, false);
    let clean = t.path().join("clean");
    create(&mut Mnist::open(&m).unwrap(), &opts(&clean)).unwrap();
    // The manifest's summary counts the bytes written: the shards' sizes.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(clean.join(MANIFEST)).unwrap()).unwrap();
    let shard_bytes: u64 = manifest["shards"].as_array().unwrap().iter().map(|s| s["bytes"].as_u64().unwrap()).sum();
    assert!(shard_bytes > 0);
    assert_eq!(manifest["summary"]["bytes_written"].as_u64(), Some(shard_bytes), "{}", manifest["summary"]);

    let dest = t.path().join("ds");
    let partial = partial_path(&dest);
    let err = format!(
        "{:#}",
        create(&mut Failing { inner: Mnist::open(&m).unwrap(), fail_at: 21 }, &opts(&dest)).unwrap_err()
    );
    assert!(err.contains("simulated failure") && err.contains("--resume"), "{err}");
    assert!(!dest.exists(), "nothing appears at --dest");
    assert!(partial.join(JOURNAL).exists() && !partial.join(MANIFEST).exists());
    // A reader does not trust the unfinished folder.
    let err = format!("{:#}", Dataset::open(&partial).err().unwrap());
    assert!(err.contains("unfinished"), "{err}");
    // As if the crash hit mid-chunk: a temp file and a shard the journal does not list.
    std::fs::write(partial.join("r32/00004.bin.tmp"), b"half").unwrap();
    std::fs::write(partial.join("r32/00009.bin"), b"junk").unwrap();

    // Without --resume the partial run is neither reused nor destroyed.
    let err = format!("{:#}", create(&mut Mnist::open(&m).unwrap(), &opts(&dest)).unwrap_err());
    assert!(err.contains("--resume") && err.contains("--force"), "{err}");
    assert!(partial.join(JOURNAL).exists());
    // Other options are refused on resume.
    let mut other = opts(&dest);
    other.resume = true;
    other.seed = 9;
    other.shuffle = true;
    let err = format!("{:#}", create(&mut Mnist::open(&m).unwrap(), &other).unwrap_err());
    assert!(
        err.contains("other options (seed: was 0, now 9; shuffle: was false, now true); resume with its options"),
        "{err}"
    );

    let mut o = opts(&dest);
    o.resume = true;
    let summary = create(&mut Mnist::open(&m).unwrap(), &o).unwrap();
    assert_eq!(summary.written, 30);
    assert!(!partial.exists());
    assert_eq!(shard_hashes(&dest), shard_hashes(&clean));
    assert_eq!(Dataset::open(&dest).unwrap().fingerprint(), Dataset::open(&clean).unwrap().fingerprint());

    // A damaged shard in a partial run stops the resume.
    let err = create(&mut Failing { inner: Mnist::open(&m).unwrap(), fail_at: 21 }, &opts(&t.path().join("x")));
    assert!(err.is_err());
    let px = partial_path(&t.path().join("x"));
    std::fs::write(px.join("r32/00001.bin"), vec![0u8; 4096]).unwrap();
    let mut o = opts(&t.path().join("x"));
    o.resume = true;
    let err = format!("{:#}", create(&mut Mnist::open(&m).unwrap(), &o).unwrap_err());
    assert!(err.contains("00001.bin") && err.contains("damaged"), "{err}");
    // --force starts over.
    o.resume = false;
    o.force = true;
    create(&mut Mnist::open(&m).unwrap(), &o).unwrap();
    assert_eq!(shard_hashes(&t.path().join("x")), shard_hashes(&clean));
}

#[test]
fn force_replaces_a_dataset_only_when_the_new_one_is_complete() {
    let t = tempfile::tempdir().unwrap();
    let m = t.path().join("m");
    make_idx(&m, 10, false);
    let dest = t.path().join("ds");
    create(&mut Mnist::open(&m).unwrap(), &opts(&dest)).unwrap();
    let before = shard_hashes(&dest);
    let mut o = opts(&dest);
    o.force = true;
    o.shuffle = true;
    o.seed = 3;
    assert!(create(&mut Failing { inner: Mnist::open(&m).unwrap(), fail_at: 0 }, &o).is_err());
    assert_eq!(shard_hashes(&dest), before, "the old dataset is intact after a failed --force run");
    create(&mut Mnist::open(&m).unwrap(), &o).unwrap();
    assert_ne!(shard_hashes(&dest), before);
    let names: Vec<_> = std::fs::read_dir(t.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "no leftovers next to the dataset: {names:?}");
}

#[cfg(target_os = "linux")]
#[test]
fn full_disk_is_a_clear_error_and_leaves_no_trusted_shard() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("p");
    let mut w = ShardWriter::create(&dir, 1, 4, 2, serde_json::json!({})).unwrap();
    // The shard's temp file is /dev/full: every write fails with ENOSPC, as on a full disk.
    std::fs::create_dir_all(dir.join("r4")).unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.join("r4/00000.bin.tmp")).unwrap();
    let rec = vec![vec![7u8; 16]];
    w.push(&rec, None, 1).unwrap();
    let err = format!("{:#}", w.push(&rec, None, 2).unwrap_err());
    assert!(err.contains("No space left on device") && err.contains("00000.bin.tmp"), "{err}");
    assert!(!dir.join("r4/00000.bin").exists() && !dir.join(MANIFEST).exists());
    let journal = sg2::data::shards::Journal::load(&dir).unwrap().unwrap();
    assert!(journal.shards.is_empty());
}

/// A kill inside `--force`'s swap leaves DEST moved aside to DEST.old-<pid> with the new dataset still in
/// DEST.partial, or the new one in place beside DEST.old-<pid>. The next command finishes the swap and says so.
#[test]
fn an_interrupted_replacement_is_finished_by_the_next_command() {
    let t = tempfile::tempdir().unwrap();
    make_idx(&t.path().join("mnist"), 9, false);
    let build = |dest: &Path, n: u64| {
        let mut o = opts(dest);
        o.max_images = Some(n);
        create(&mut Mnist::open(&t.path().join("mnist")).unwrap(), &o).unwrap();
    };
    let (old_ds, new_ds) = (t.path().join("old_ds"), t.path().join("new_ds"));
    build(&old_ds, 3);
    build(&new_ds, 5);
    let copy = |from: &Path, to: &Path| {
        let ok = std::process::Command::new("cp").args(["-r", s(from), s(to)]).status().unwrap().success();
        assert!(ok);
    };
    // A process that has exited: its swap is not in progress.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    child.wait().unwrap();
    let dest = t.path().join("ds");
    let old = t.path().join(format!("ds.old-{}", child.id()));
    let info = || sg2(&["dataset-tool", "info", s(&dest)]);

    // Killed between the renames: no DEST, the complete new dataset in DEST.partial.
    copy(&old_ds, &old);
    copy(&new_ds, &partial_path(&dest));
    let (ok, out, err) = info();
    assert!(ok, "{err}");
    assert!(err.contains("completed an interrupted replacement: the new dataset is in place"), "{err}");
    assert!(out.contains("images       5"), "{out}");
    assert!(!old.exists() && !partial_path(&dest).exists());

    // Killed between the renames with no complete new dataset: the old one comes back.
    std::fs::remove_dir_all(&dest).unwrap();
    copy(&old_ds, &old);
    let (ok, out, err) = info();
    assert!(ok, "{err}");
    assert!(err.contains("rolled back an interrupted replacement: the previous dataset is restored"), "{err}");
    assert!(out.contains("images       3") && !old.exists(), "{out}");
    // Training finishes the swap too before it looks for the folder.
    std::fs::rename(&dest, &old).unwrap();
    let mut cfg = sg2::config::Config::default();
    (cfg.model.resolution, cfg.model.channels) = (32, 1);
    let ds = sg2::train::run::open_dataset(&dest, &cfg).unwrap();
    assert!(ds.count == 3 && !old.exists());

    // Killed while removing the replaced dataset: the create command removes the rest and goes on.
    copy(&new_ds, &old);
    std::fs::remove_file(old.join(MANIFEST)).unwrap();
    let (ok, _, err) =
        sg2(&["dataset-tool", "create_mnist", "--source", s(&t.path().join("mnist")), "--dest", s(&dest)]);
    assert!(!ok && err.contains("removed the replaced dataset") && err.contains("already exists"), "{err}");
    assert!(!old.exists() && Dataset::open(&dest).unwrap().count == 3);

    // A swap whose sg2 still runs is left alone (an sg2 waiting on its config from a pipe stands in for it).
    let mut running = common::sg2_bin()
        .args(["info", "--config", "/dev/stdin", "--config-only"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let live = t.path().join(format!("ds.old-{}", running.id()));
    copy(&old_ds, &live);
    let (ok, _, err) = info();
    assert!(ok && !err.contains("interrupted"), "{err}");
    assert!(live.exists());
    // With DEST gone meanwhile, a missing dataset says what holds it.
    std::fs::rename(&dest, t.path().join("aside")).unwrap();
    let (ok, _, err) = info();
    let want = format!("no such dataset: a running sg2 is replacing it ({} holds", live.display());
    assert!(!ok && err.contains(&want), "{err}");
    running.kill().unwrap();
    running.wait().unwrap();
    std::fs::remove_dir_all(&live).unwrap();

    // A pid that another program took over since the kill is no swap in progress: rolled back.
    let mut other = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let reused = t.path().join(format!("ds.old-{}", other.id()));
    copy(&old_ds, &reused);
    let (ok, out, err) = info();
    other.kill().unwrap();
    other.wait().unwrap();
    assert!(ok && err.contains("rolled back an interrupted replacement"), "{err}");
    assert!(out.contains("images       3") && !reused.exists(), "{out}");
}
