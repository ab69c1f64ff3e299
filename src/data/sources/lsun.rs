//! LSUN: an LMDB (folder with `data.mdb`) whose keys are hex ids and whose values are WebP or JPEG images, walked
//! in key order as the official tool does; or the original `.zip`, from which only `data.mdb` is extracted
//! (streamed, resumable, CRC-checked) to a folder next to the output.

use super::lmdb_file::{Leaf, LmdbFile};
use super::{Item, Payload, Source};
use crate::util::{progress_bar, Progress};
use anyhow::{bail, ensure, Context, Result};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub struct Lmdb {
    path: PathBuf,
    file: LmdbFile,
    /// The leaf page read last: sequential reads take many entries from each.
    leaf: Option<Leaf>,
}

impl Lmdb {
    /// Opens an LMDB folder read-only (no lock file is needed or made), checking its structure first: a truncated,
    /// empty or damaged `data.mdb` is refused with one line naming the problem.
    pub fn open(dir: &Path) -> Result<Lmdb> {
        ensure!(dir.exists(), "{}: no such file or folder", dir.display());
        ensure!(dir.is_dir(), "{}: not an LMDB folder or a .zip", dir.display());
        let data = dir.join("data.mdb");
        ensure!(data.is_file(), "{}: not an LMDB folder (no data.mdb)", dir.display());
        Ok(Lmdb { path: dir.to_path_buf(), file: LmdbFile::open(&data)?, leaf: None })
    }
}

impl Source for Lmdb {
    fn len(&self) -> u64 {
        self.file.len()
    }

    fn get(&mut self, index: u64) -> Result<Item> {
        let (leaf, i) = self.file.leaf_for(index, self.leaf.take())?;
        let (key, value) = self.file.entry(&leaf, i)?;
        self.leaf = Some(leaf);
        Ok(Item { key: String::from_utf8_lossy(&key).into_owned(), payload: Payload::Encoded(value), label: None })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "lsun", "path": self.path.display().to_string() })
    }
}

/// An LMDB source from `--source`: an LMDB folder, or an LSUN `.zip` whose `data.mdb` is extracted to
/// `<dest>.lmdb/` first (kept for later runs).
pub fn open_source(source: &Path, dest: &Path, progress: bool) -> Result<Lmdb> {
    ensure!(source.exists(), "{}: no such file or folder", source.display());
    if source.is_file() {
        let mut dir = dest.as_os_str().to_owned();
        dir.push(".lmdb");
        let dir = PathBuf::from(dir);
        extract_lmdb(source, &dir, progress)?;
        return Lmdb::open(&dir);
    }
    Lmdb::open(source)
}

/// Extracts the `data.mdb` of an LSUN zip to `dir/data.mdb`, streaming through `data.mdb.partial`, which a later
/// call continues; the CRC-32 of the whole file is checked before it is renamed into place.
pub fn extract_lmdb(zip_path: &Path, dir: &Path, progress: bool) -> Result<()> {
    let file = std::fs::File::open(zip_path).with_context(|| format!("{}: cannot open", zip_path.display()))?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{}: not a zip archive, or truncated (no central directory)", zip_path.display()))?;
    let index = (0..archive.len())
        .find(|&i| archive.name_for_index(i).is_some_and(|n| n == "data.mdb" || n.ends_with("/data.mdb")))
        .with_context(|| format!("{}: holds no data.mdb (not an LSUN LMDB zip)", zip_path.display()))?;
    let (size, crc, stored, data_start) = {
        let e = archive.by_index_raw(index).with_context(|| format!("{}: cannot read entry", zip_path.display()))?;
        (e.size(), e.crc32(), e.compression() == zip::CompressionMethod::Stored, e.data_start())
    };
    let out = dir.join("data.mdb");
    if out.exists() && std::fs::metadata(&out)?.len() == size {
        return Ok(());
    }
    crate::util::create_dir(dir)?;
    let part = dir.join("data.mdb.partial");
    let mut hasher = crc32fast::Hasher::new();
    let mut done = 0u64;
    if part.exists() {
        done = std::fs::metadata(&part)?.len();
        if done > size {
            std::fs::remove_file(&part)?;
            done = 0;
        } else {
            // The bytes already there are part of the checksum.
            let mut f = std::fs::File::open(&part)?;
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let k = f.read(&mut buf).with_context(|| format!("{}: read failed", part.display()))?;
                if k == 0 {
                    break;
                }
                hasher.update(&buf[..k]);
            }
        }
    }
    let pb = progress_bar(Progress::Bytes, size, "extracting data.mdb", progress);
    pb.set_position(done);
    let mut w = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&part)
        .with_context(|| format!("{}: cannot create", part.display()))?;
    let mut copy = |r: &mut dyn Read, mut skip: u64| -> Result<()> {
        let mut buf = vec![0u8; 4 << 20];
        let mut left = size - done;
        while left > 0 {
            let k = r.read(&mut buf).with_context(|| format!("{}: read failed (truncated?)", zip_path.display()))?;
            ensure!(k > 0, "{}: ends early (truncated)", zip_path.display());
            let mut chunk = &buf[..k];
            if skip > 0 {
                let s = skip.min(k as u64) as usize;
                chunk = &chunk[s..];
                skip -= s as u64;
            }
            let chunk = &chunk[..chunk.len().min(left as usize)];
            w.write_all(chunk).with_context(|| format!("{}: write failed", part.display()))?;
            hasher.update(chunk);
            left -= chunk.len() as u64;
            pb.inc(chunk.len() as u64);
        }
        Ok(())
    };
    if stored {
        // Stored entries continue by seeking straight to the remaining bytes.
        let mut f = std::fs::File::open(zip_path)?;
        f.seek(SeekFrom::Start(data_start + done))?;
        copy(&mut f, 0)?;
    } else {
        let mut e =
            archive.by_index(index).with_context(|| format!("{}: cannot read data.mdb entry", zip_path.display()))?;
        copy(&mut e, done)?;
    }
    w.sync_all().with_context(|| format!("{}: cannot sync", part.display()))?;
    pb.finish_and_clear();
    if hasher.finalize() != crc {
        std::fs::remove_file(&part)?;
        bail!(
            "{}: data.mdb fails its CRC check (corrupt archive); the partial extraction was removed",
            zip_path.display()
        );
    }
    std::fs::rename(&part, &out).with_context(|| format!("{}: cannot rename into place", part.display()))?;
    Ok(())
}
