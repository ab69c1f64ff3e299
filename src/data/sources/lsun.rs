//! LSUN: an LMDB (folder with `data.mdb`) whose keys are hex ids and whose values are WebP or JPEG images, walked
//! in key order as the official tool does; or the original `.zip`, from which only `data.mdb` is extracted
//! (streamed, resumable, CRC-checked) to a folder next to the output.

use super::{Item, Payload, Source};
use crate::util::{progress_bar, Progress};
use anyhow::{bail, ensure, Context, Result};
use heed::types::Bytes;
use heed::{Database, Env, EnvFlags, EnvOpenOptions, WithoutTls};
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};

pub struct Lmdb {
    path: PathBuf,
    env: Env<WithoutTls>,
    db: Database<Bytes, Bytes>,
    len: u64,
    /// Every key, loaded on the first random access (shuffled order).
    keys: Option<Vec<Vec<u8>>>,
    /// Position and key of the last item read sequentially, to continue the walk without rescanning.
    cursor: Option<(u64, Vec<u8>)>,
}

impl Lmdb {
    /// Opens an LMDB folder read-only without a lock file; the map size covers any file size (LMDB raises it to
    /// the size recorded in the file, and mapping does not need RAM).
    pub fn open(dir: &Path) -> Result<Lmdb> {
        ensure!(dir.exists(), "{}: no such file or folder", dir.display());
        ensure!(dir.is_dir(), "{}: not an LMDB folder or a .zip", dir.display());
        ensure!(dir.join("data.mdb").is_file(), "{}: not an LMDB folder (no data.mdb)", dir.display());
        let mut opts = EnvOpenOptions::new().read_txn_without_tls();
        opts.max_dbs(1);
        // Safety: read-only and no lock: the caller must not write the database while it is read; the dataset tool
        // only ever reads it.
        unsafe { opts.flags(EnvFlags::READ_ONLY | EnvFlags::NO_LOCK) };
        let env = unsafe { opts.open(dir) }.with_context(|| format!("{}: not a valid LMDB", dir.display()))?;
        let rtxn = env.read_txn().with_context(|| format!("{}: cannot read LMDB", dir.display()))?;
        let db: Database<Bytes, Bytes> = env
            .open_database(&rtxn, None)
            .with_context(|| format!("{}: cannot open the LMDB's main database", dir.display()))?
            .with_context(|| format!("{}: LMDB has no main database", dir.display()))?;
        let len = db.len(&rtxn).with_context(|| format!("{}: cannot read LMDB", dir.display()))?;
        drop(rtxn);
        Ok(Lmdb { path: dir.to_path_buf(), env, db, len, keys: None, cursor: None })
    }

    fn item(key: &[u8], value: &[u8]) -> Item {
        Item { key: String::from_utf8_lossy(key).into_owned(), payload: Payload::Encoded(value.to_vec()), label: None }
    }
}

impl Source for Lmdb {
    fn len(&self) -> u64 {
        self.len
    }

    fn get(&mut self, index: u64) -> Result<Item> {
        let ctx = || format!("{}: LMDB read failed", self.path.display());
        let rtxn = self.env.read_txn().with_context(ctx)?;
        if self.keys.is_none() {
            let mut keys = Vec::with_capacity(self.len as usize);
            for kv in self.db.iter(&rtxn).with_context(ctx)? {
                keys.push(kv.with_context(ctx)?.0.to_vec());
            }
            self.keys = Some(keys);
        }
        let key = &self.keys.as_ref().unwrap()[index as usize];
        let value = self.db.get(&rtxn, key).with_context(ctx)?.with_context(ctx)?;
        Ok(Self::item(key, value))
    }

    fn read_range(&mut self, start: u64, n: u64) -> Result<Vec<Item>> {
        let ctx = || format!("{}: LMDB read failed", self.path.display());
        let rtxn = self.env.read_txn().with_context(ctx)?;
        let mut out = Vec::with_capacity(n as usize);
        let mut push = |kv: heed::Result<(&[u8], &[u8])>| -> Result<bool> {
            let (k, v) = kv.with_context(ctx)?;
            out.push(Self::item(k, v));
            Ok(out.len() as u64 == n)
        };
        match &self.cursor {
            Some((pos, key)) if *pos + 1 == start => {
                let range = (Bound::Excluded(key.as_slice()), Bound::Unbounded);
                for kv in self.db.range(&rtxn, &range).with_context(ctx)? {
                    if push(kv)? {
                        break;
                    }
                }
            }
            _ => {
                for kv in self.db.iter(&rtxn).with_context(ctx)?.skip(start as usize) {
                    if push(kv)? {
                        break;
                    }
                }
            }
        }
        if let Some(last) = out.last() {
            self.cursor = Some((start + out.len() as u64 - 1, last.key.clone().into_bytes()));
        }
        Ok(out)
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
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create folder", dir.display()))?;
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
