//! The output folder of the dataset tool: `DEST` appears only complete, built in `DEST.partial`; a replaced
//! dataset is moved aside to `DEST.old-<pid>` for the swap. A kill inside the swap leaves one of two states, which
//! the next command finds and finishes ([`recover_swap`]): either the new dataset goes into place or the old one
//! comes back, and it says which.

use super::shards::{JOURNAL, MANIFEST};
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};

/// Refuses to touch a folder that is not ours: only an sg2 dataset, an unfinished run or an empty folder.
pub(crate) fn check_ours(dir: &Path) -> Result<()> {
    ensure!(dir.is_dir(), "{}: exists and is not a folder; refusing to replace it", dir.display());
    let ours = dir.join(MANIFEST).exists()
        || dir.join(JOURNAL).exists()
        || std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?.next().is_none();
    ensure!(ours, "{}: not an sg2 dataset; refusing to replace it", dir.display());
    Ok(())
}

/// Refuses an existing `dest` unless `force` and it is an sg2 dataset (or empty). Callers that do long work before
/// `create` (extracting a zip) check this first. An interrupted swap at `dest` is finished first.
pub fn check_dest(dest: &Path, force: bool) -> Result<()> {
    for msg in recover_swap(dest)? {
        eprintln!("{msg}");
    }
    if dest.exists() {
        ensure!(force, "{}: already exists (use --force to replace it)", dest.display());
        check_ours(dest)?;
    }
    Ok(())
}

pub fn partial_path(dest: &Path) -> PathBuf {
    with_suffix(dest, ".partial")
}

fn with_suffix(dest: &Path, suffix: &str) -> PathBuf {
    let mut s = dest.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Moves the finished `partial` folder to `dest`, replacing an old dataset only once the new one is complete.
pub(crate) fn install(partial: &Path, dest: &Path) -> Result<()> {
    if dest.exists() {
        let old = with_suffix(dest, &format!(".old-{}", std::process::id()));
        std::fs::rename(dest, &old).with_context(|| format!("{}: cannot move aside", dest.display()))?;
        // A kill here leaves no DEST: recover_swap puts the complete DEST.partial in place.
        std::fs::rename(partial, dest).with_context(|| format!("{}: cannot rename into place", partial.display()))?;
        // A kill here leaves DEST.old-<pid>: recover_swap removes it.
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("{}: cannot remove the replaced dataset", old.display()))?;
    } else {
        std::fs::rename(partial, dest).with_context(|| format!("{}: cannot rename into place", partial.display()))?;
    }
    Ok(())
}

/// `DEST.old-<pid>` folders with the pid in their name, sorted.
fn old_folders(dest: &Path) -> Vec<(u32, PathBuf)> {
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else { return vec![] };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let prefix = format!("{}.old-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(parent) else { return vec![] };
    let mut out: Vec<(u32, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let pid = e.file_name().to_string_lossy().strip_prefix(&prefix)?.parse::<u32>().ok()?;
            Some((pid, e.path()))
        })
        .collect();
    out.sort();
    out
}

/// `DEST.old-<pid>` folders left by swaps whose process is gone (or is no sg2 any more: a reused pid).
fn stale_old_folders(dest: &Path) -> Vec<PathBuf> {
    old_folders(dest).into_iter().filter(|(pid, _)| !crate::util::sg2_process_alive(*pid)).map(|(_, p)| p).collect()
}

/// `DEST.old-<pid>` folders of swaps under way in a running sg2 (for the message of a missing DEST).
pub(crate) fn live_old_folders(dest: &Path) -> Vec<PathBuf> {
    old_folders(dest).into_iter().filter(|(pid, _)| crate::util::sg2_process_alive(*pid)).map(|(_, p)| p).collect()
}

/// Finishes a swap that a kill interrupted, and says what it did (one line per action):
/// - DEST missing, a complete DEST.partial: the new dataset goes into place and the old one is removed;
/// - DEST missing, no complete DEST.partial: the old dataset is restored;
/// - DEST present and complete: the leftover old dataset is removed.
pub fn recover_swap(dest: &Path) -> Result<Vec<String>> {
    let mut said = vec![];
    for old in stale_old_folders(dest) {
        let partial = partial_path(dest);
        let complete = |p: &Path| p.join(MANIFEST).is_file() && !p.join(JOURNAL).exists();
        if !dest.exists() {
            if complete(&partial) {
                std::fs::rename(&partial, dest)
                    .with_context(|| format!("{}: cannot rename into place", partial.display()))?;
                std::fs::remove_dir_all(&old).with_context(|| format!("{}: cannot remove", old.display()))?;
                said.push(format!(
                    "{}: completed an interrupted replacement: the new dataset is in place, {} removed",
                    dest.display(),
                    old.display()
                ));
            } else {
                std::fs::rename(&old, dest).with_context(|| format!("{}: cannot restore", old.display()))?;
                said.push(format!(
                    "{}: rolled back an interrupted replacement: the previous dataset is restored from {}",
                    dest.display(),
                    old.display()
                ));
            }
        } else if complete(dest) {
            std::fs::remove_dir_all(&old).with_context(|| format!("{}: cannot remove", old.display()))?;
            said.push(format!(
                "{}: completed an interrupted replacement: removed the replaced dataset {}",
                dest.display(),
                old.display()
            ));
        } else {
            bail!(
                "{}: an interrupted replacement left {} beside a folder that is not a complete dataset; move one \
                 of them away",
                dest.display(),
                old.display()
            );
        }
    }
    Ok(said)
}
