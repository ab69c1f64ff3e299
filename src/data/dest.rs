//! The output folder of the dataset tool: `DEST` appears only complete, built in `DEST.partial`; a replaced
//! dataset is moved aside to `DEST.old-<pid>` for the swap.

use super::shards::{JOURNAL, MANIFEST};
use anyhow::{ensure, Context, Result};
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
/// `create` (extracting a zip) check this first.
pub fn check_dest(dest: &Path, force: bool) -> Result<()> {
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
        std::fs::rename(partial, dest).with_context(|| format!("{}: cannot rename into place", partial.display()))?;
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("{}: cannot remove the replaced dataset", old.display()))?;
    } else {
        std::fs::rename(partial, dest).with_context(|| format!("{}: cannot rename into place", partial.display()))?;
    }
    Ok(())
}
