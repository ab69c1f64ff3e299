//! Training snapshots and the run folder.
//!
//! A snapshot is an sg2 checkpoint (`model::checkpoint`: `G.`, `G_ema.`, `D.` tensors, the config in metadata) plus
//! what resuming needs: Adam moments (`opt_G.*`, `opt_D.*`), `pl_mean` as a tensor and the loop's state as JSON
//! under `sg2.train` (image count, minibatch index, tick, seed, loader position, learning-rate factor). Files are
//! written atomically; `latest` (a one-line text file naming the newest complete snapshot) is replaced after it.

use super::adam::Adam;
use crate::config::Config;
use crate::data::loader::LoaderState;
use crate::model::checkpoint::{self, Checkpoint};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tch::nn::VarStore;
use tch::Tensor;

pub const KEY_TRAIN: &str = "sg2.train";
pub const KEY_DATASET: &str = "sg2.dataset";
pub const LATEST: &str = "latest";
pub const PREFIX: &str = "network-snapshot-";

/// A metric value that retention keeps the snapshot of.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub metric: String,
    pub value: f64,
    pub snapshot: String,
}

/// Everything besides tensors that a resumed run needs to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub cur_nimg: u64,
    /// Minibatches done; with the seed it determines every random draw of the next step.
    pub batch_idx: u64,
    pub cur_tick: u64,
    pub seed: u64,
    pub loader: LoaderState,
    /// Both learning rates are multiplied by this (1, lowered by each rollback).
    pub lr_factor: f64,
    pub rollbacks: u32,
    pub opt_g_step: u64,
    pub opt_d_step: u64,
    pub best: Option<Best>,
    /// The augmentation probability (ADA's current value).
    #[serde(default)]
    pub augment_p: f64,
    /// ADA's sum and count of sign(D(real)) since its last adjustment, so a resume adjusts at the same point.
    #[serde(default)]
    pub ada_signs: [f64; 2],
}

/// `{kimg:06}` for a whole number of kimg, else `{whole:06}_{rest:03}` (e.g. 000000_064).
pub fn label(cur_nimg: u64) -> String {
    let (whole, rest) = (cur_nimg / 1000, cur_nimg % 1000);
    if rest == 0 {
        format!("{whole:06}")
    } else {
        format!("{whole:06}_{rest:03}")
    }
}

pub fn snapshot_name(cur_nimg: u64) -> String {
    format!("{PREFIX}{}.safetensors", label(cur_nimg))
}

/// The image count a snapshot or fakes file name encodes (the inverse of [`label`]).
pub fn nimg_of_label(label: &str) -> Option<u64> {
    let (whole, rest) = match label.split_once('_') {
        Some((w, r)) if r.len() == 3 => (w, r.parse::<u64>().ok()?),
        Some(_) => return None,
        None => (label, 0),
    };
    if whole.len() < 6 {
        return None;
    }
    Some(whole.parse::<u64>().ok()? * 1000 + rest)
}

/// The networks and optimizers a snapshot holds.
pub struct Parts<'a> {
    pub g: &'a VarStore,
    pub g_ema: &'a VarStore,
    pub d: &'a VarStore,
    pub opt_g: &'a Adam,
    pub opt_d: &'a Adam,
    pub pl_mean: &'a Tensor,
}

pub fn save(path: &Path, config: &Config, parts: &Parts, state: &TrainState, dataset: &str) -> Result<()> {
    let mut extra = parts.opt_g.state_tensors("opt_G");
    extra.extend(parts.opt_d.state_tensors("opt_D"));
    extra.push(("pl_mean".into(), parts.pl_mean.shallow_clone()));
    let mut meta = BTreeMap::new();
    meta.insert(KEY_TRAIN.into(), serde_json::to_string(state)?);
    meta.insert(KEY_DATASET.into(), dataset.to_string());
    checkpoint::save(path, config, &[("G", parts.g), ("G_ema", parts.g_ema), ("D", parts.d)], &extra, &meta)
        .with_context(|| format!("{}: cannot write snapshot", path.display()))
}

/// Loads a snapshot that can be resumed: a checkpoint with the training state.
pub fn load(path: &Path) -> Result<(Checkpoint, TrainState)> {
    let ckpt = checkpoint::load(path)?;
    let state = state_of(path, &ckpt.metadata)?;
    for p in ["G", "G_ema", "D"] {
        if !ckpt.has(p) {
            bail!("{}: snapshot lacks the {p} network", path.display());
        }
    }
    Ok((ckpt, state))
}

/// The training state of a snapshot, from its header alone (choosing or checking a snapshot reads no tensors).
pub fn load_state(path: &Path) -> Result<TrainState> {
    if !path.exists() {
        bail!("{}: no such checkpoint", path.display());
    }
    state_of(path, &checkpoint::read_metadata(path)?)
}

fn state_of(path: &Path, metadata: &BTreeMap<String, String>) -> Result<TrainState> {
    let text = metadata.get(KEY_TRAIN).with_context(|| {
        format!(
            "{}: holds no training state: a network, not a training snapshot (start a new run from its weights with \
             --init)",
            path.display()
        )
    })?;
    let state: TrainState =
        serde_json::from_str(text).with_context(|| format!("{}: unreadable training state", path.display()))?;
    state.check().with_context(|| format!("{}: damaged training state", path.display()))?;
    Ok(state)
}

impl TrainState {
    /// The ranges a training run can produce (the header is not under the tensors' checksum).
    fn check(&self) -> Result<()> {
        let f = self.lr_factor;
        anyhow::ensure!(f.is_finite() && f > 0.0 && f <= 1.0, "lr_factor {f} is not in (0, 1]");
        let p = self.augment_p;
        // ADA's p has no upper bound in the official adjustment either.
        anyhow::ensure!(p.is_finite() && p >= 0.0, "augment_p {p} is not a finite number >= 0");
        let [sum, n] = self.ada_signs;
        anyhow::ensure!(
            sum.is_finite() && n.is_finite() && sum.abs() <= n,
            "ada_signs [{sum}, {n}] are not a sum of signs and its count"
        );
        Ok(())
    }
}

/// Points `latest` at `snapshot` (a file name in `run_dir`), atomically.
pub fn write_latest(run_dir: &Path, snapshot: &str) -> Result<()> {
    crate::util::write_bytes_atomic(&run_dir.join(LATEST), format!("{snapshot}\n").as_bytes())
}

/// The snapshot `latest` names, when it exists.
pub fn read_latest(run_dir: &Path) -> Option<PathBuf> {
    let name = std::fs::read_to_string(run_dir.join(LATEST)).ok()?;
    let p = run_dir.join(name.trim());
    p.is_file().then_some(p)
}

/// Snapshot files in a run folder, oldest first (by the image count in the name).
pub fn list_snapshots(run_dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut v: Vec<(u64, PathBuf)> = std::fs::read_dir(run_dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?;
            let lbl = name.strip_prefix(PREFIX)?.strip_suffix(".safetensors")?;
            Some((nimg_of_label(lbl)?, p))
        })
        .collect();
    v.sort();
    v
}

/// Deletes all but the newest `keep` snapshots (0 = keep all), never the one `latest` names nor `best`.
pub fn retain(run_dir: &Path, keep: u32, best: Option<&str>) -> Result<Vec<PathBuf>> {
    if keep == 0 {
        return Ok(vec![]);
    }
    let all = list_snapshots(run_dir);
    let latest = read_latest(run_dir);
    let mut removed = vec![];
    let cut = all.len().saturating_sub(keep as usize);
    for (_, p) in &all[..cut] {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if Some(name) == best || latest.as_deref() == Some(p.as_path()) {
            continue;
        }
        std::fs::remove_file(p).with_context(|| format!("{}: cannot remove old snapshot", p.display()))?;
        removed.push(p.clone());
    }
    Ok(removed)
}

/// An exclusive lock on a run folder (`flock` on `<run>/.lock`, which holds the owner's pid), so two trainers never
/// write one folder. The kernel releases it when the process exits, also on a crash or kill.
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    pub fn acquire(run_dir: &Path) -> Result<RunLock> {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        let path = run_dir.join(".lock");
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let who = if holder.is_empty() { "another process".to_string() } else { format!("pid {holder}") };
            bail!("{}: the run folder is in use by another sg2 train ({who})", run_dir.display());
        }
        file.set_len(0)?;
        file.seek(std::io::SeekFrom::Start(0))?;
        write!(file, "{}", std::process::id())?;
        file.flush()?;
        Ok(RunLock { _file: file })
    }
}

/// Removes temporary files a killed writer left in a run folder (`.<name>.<pid>.tmp`); call with the lock held.
pub fn remove_stale_temps(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = vec![];
    for e in std::fs::read_dir(run_dir).with_context(|| format!("{}: cannot list", run_dir.display()))? {
        let p = e?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with('.') && name.ends_with(".tmp") && p.is_file() {
            std::fs::remove_file(&p).with_context(|| format!("{}: cannot remove", p.display()))?;
            removed.push(p);
        }
    }
    Ok(removed)
}

/// `<outdir>/NNNNN-<config stem>-<dataset name>` with the next free index.
pub fn new_run_dir(outdir: &Path, desc: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(outdir).with_context(|| format!("{}: cannot create output folder", outdir.display()))?;
    let next = run_dirs(outdir)?.iter().map(|(i, _, _)| i + 1).max().unwrap_or(0);
    let dir = outdir.join(format!("{next:05}-{desc}"));
    std::fs::create_dir(&dir).with_context(|| format!("{}: cannot create run folder", dir.display()))?;
    Ok(dir)
}

/// (index, description, path) of the run folders in `outdir`.
fn run_dirs(outdir: &Path) -> Result<Vec<(u64, String, PathBuf)>> {
    let rd = std::fs::read_dir(outdir).with_context(|| format!("{}: cannot list", outdir.display()))?;
    Ok(rd
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?.to_string();
            let (idx, desc) = name.split_once('-')?;
            (idx.len() == 5 && p.is_dir()).then_some(())?;
            Some((idx.parse().ok()?, desc.to_string(), p))
        })
        .collect())
}

/// The error for a run folder whose `latest` names a missing or unreadable snapshot, pointing to the newest
/// snapshot beside it that reads.
fn broken_latest(dir: &Path, what: String) -> anyhow::Error {
    let good = list_snapshots(dir).into_iter().rev().find(|(_, p)| load_state(p).is_ok());
    let hint = good.map_or(String::new(), |(_, p)| {
        format!("; to continue from its newest readable snapshot, pass --resume {}", p.display())
    });
    anyhow::anyhow!("--resume latest: {}: {what}{hint}", dir.join(LATEST).display())
}

/// The newest complete snapshot (by image count) among run folders named `NNNNN-<desc>` in `outdir`.
pub fn find_latest(outdir: &Path, desc: &str) -> Result<Option<(PathBuf, PathBuf, TrainState)>> {
    if !outdir.is_dir() {
        return Ok(None);
    }
    let mut best: Option<(PathBuf, PathBuf, TrainState)> = None;
    for (_, d, dir) in run_dirs(outdir)? {
        if d != desc {
            continue;
        }
        // A run without `latest` never completed a snapshot; one whose `latest` is broken is an error, not a
        // reason to continue some other run without a word.
        let Ok(name) = std::fs::read_to_string(dir.join(LATEST)) else { continue };
        let snap = dir.join(name.trim());
        let state = match (snap.is_file(), load_state(&snap)) {
            (true, Ok(state)) => state,
            (false, _) => return Err(broken_latest(&dir, format!("names {}, which is not there", name.trim()))),
            (true, Err(e)) => return Err(broken_latest(&dir, format!("{e:#}"))),
        };
        if best.as_ref().is_none_or(|b| state.cur_nimg > b.2.cur_nimg) {
            best = Some((dir, snap, state));
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_sort_in_training_order_within_a_run() {
        assert_eq!(label(64), "000000_064");
        assert_eq!(label(128), "000000_128");
        assert_eq!(label(25_000_000), "025000");
        assert_eq!(label(1_005), "000001_005");
        // A whole label sorts before its fractional successors ("." < "_") and after its predecessors.
        assert!(snapshot_name(1000) < snapshot_name(1_500) && snapshot_name(999) < snapshot_name(1000));
        assert!(format!("fakes{}.png", label(1000)) < format!("fakes{}.png", label(1_500)));
        assert!(snapshot_name(64) < snapshot_name(128));
        for n in [0, 64, 1000, 1_005, 123_456_789] {
            assert_eq!(nimg_of_label(&label(n)), Some(n));
        }
        assert_eq!(nimg_of_label("12"), None);
        assert_eq!(nimg_of_label("000001_5"), None);
    }

    #[test]
    fn a_training_state_out_of_range_is_damaged() {
        let good = serde_json::json!({
            "cur_nimg": 64, "batch_idx": 2, "cur_tick": 1, "seed": 0,
            "loader": {"epoch": 0, "position": 64, "seed": 0},
            "lr_factor": 0.5, "rollbacks": 1, "opt_g_step": 2, "opt_d_step": 2, "best": null,
            "augment_p": 1.2, "ada_signs": [-3.0, 8.0]
        });
        let state_with = |key: &str, v: serde_json::Value| {
            let mut j = good.clone();
            j[key] = v;
            let meta = BTreeMap::from([(KEY_TRAIN.to_string(), j.to_string())]);
            state_of(Path::new("s.safetensors"), &meta).map_err(|e| format!("{e:#}"))
        };
        assert!(state_with("rollbacks", 1.into()).is_ok());
        for (key, v, want) in [
            ("lr_factor", serde_json::json!(-1.0), "lr_factor -1 is not in (0, 1]"),
            ("lr_factor", serde_json::json!(1e308), "lr_factor"),
            ("augment_p", serde_json::json!(-0.1), "augment_p -0.1"),
            ("ada_signs", serde_json::json!([9.0, 8.0]), "ada_signs [9, 8]"),
        ] {
            let e = state_with(key, v).unwrap_err();
            assert!(e.starts_with("s.safetensors: damaged training state: ") && e.contains(want), "{e}");
        }
    }

    #[test]
    fn run_dirs_get_the_next_free_index() {
        let dir = tempfile::tempdir().unwrap();
        let a = new_run_dir(dir.path(), "fmnist32-fmnist").unwrap();
        let b = new_run_dir(dir.path(), "other-x").unwrap();
        assert!(a.ends_with("00000-fmnist32-fmnist") && b.ends_with("00001-other-x"));
        std::fs::create_dir(dir.path().join("junk")).unwrap();
        assert!(new_run_dir(dir.path(), "a-b").unwrap().ends_with("00002-a-b"));
    }

    #[test]
    fn a_run_folder_has_one_owner_and_stale_temps_go() {
        let dir = tempfile::tempdir().unwrap();
        let lock = RunLock::acquire(dir.path()).unwrap();
        // flock is per open file description: a second acquisition in this process is refused like another
        // process's.
        let err = RunLock::acquire(dir.path()).err().unwrap().to_string();
        assert!(err.contains(&format!("in use by another sg2 train (pid {})", std::process::id())), "{err}");
        drop(lock);
        let _again = RunLock::acquire(dir.path()).unwrap();
        std::fs::write(dir.path().join(".network-snapshot-000004.safetensors.77.tmp"), b"x").unwrap();
        std::fs::write(dir.path().join(snapshot_name(4)), b"x").unwrap();
        assert_eq!(remove_stale_temps(dir.path()).unwrap().len(), 1);
        assert!(dir.path().join(snapshot_name(4)).is_file());
    }

    #[test]
    fn retention_keeps_the_newest_latest_and_best() {
        let dir = tempfile::tempdir().unwrap();
        for n in [16u64, 32, 48, 64, 2000] {
            std::fs::write(dir.path().join(snapshot_name(n)), b"x").unwrap();
        }
        write_latest(dir.path(), &snapshot_name(2000)).unwrap();
        let removed = retain(dir.path(), 2, Some(&snapshot_name(16))).unwrap();
        assert_eq!(removed.len(), 2);
        let left: Vec<u64> = list_snapshots(dir.path()).into_iter().map(|(n, _)| n).collect();
        assert_eq!(left, vec![16, 64, 2000]);
        assert_eq!(read_latest(dir.path()).unwrap(), dir.path().join(snapshot_name(2000)));
    }
}
