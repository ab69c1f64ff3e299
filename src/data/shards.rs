//! The on-disk dataset: a manifest plus fixed-size uint8 CHW records in shard files, one set per level of detail.
//! The format is specified in docs/SHARDS.md. Writing goes through [`ShardWriter`] (crash-safe, resumable),
//! reading through [`Dataset`] (mmap, random access).

use crate::util::{write_atomic, write_bytes_atomic};
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";
pub const JOURNAL: &str = "progress.json";
pub const LABELS: &str = "labels.u32";
pub const FORMAT: &str = "sg2-shards";
pub const VERSION: u32 = 1;
/// Largest resolution of a dataset: one 8192x8192 RGB record is 200 MB; above that a typo is likelier than intent.
pub const MAX_RESOLUTION: usize = 8192;
/// Largest number of label classes (ImageNet-21k has 21,841).
pub const MAX_CLASSES: u32 = 1 << 20;

/// One shard file: records `first .. first + count` of one level.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ShardInfo {
    pub level: usize,
    pub file: String,
    pub first: u64,
    pub count: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// A file referenced by the manifest with its size and checksum.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct FileInfo {
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub resolution: usize,
    pub channels: usize,
    pub count: u64,
    /// Resolutions present, largest first, down to 4.
    pub levels: Vec<usize>,
    pub records_per_shard: u64,
    /// 0 when the dataset has no labels.
    pub num_classes: u32,
    pub labels: Option<FileInfo>,
    pub shards: Vec<ShardInfo>,
    /// What the records were made from (kind, path, options).
    pub source: serde_json::Value,
    /// The command line that made the dataset.
    pub command: String,
    /// Statistics of the run (written, skipped by reason, seconds).
    pub summary: serde_json::Value,
}

impl Manifest {
    pub fn record_bytes(&self, resolution: usize) -> usize {
        self.channels * resolution * resolution
    }

    /// Checks every field against its range, so readers can divide, index and allocate by them: one message naming
    /// the field and the problem.
    pub fn validate(&self) -> Result<(), String> {
        let r = self.resolution;
        if !(r.is_power_of_two() && (4..=MAX_RESOLUTION).contains(&r)) {
            return Err(format!("resolution {r} is not a power of two from 4 to {MAX_RESOLUTION}"));
        }
        if self.channels != 1 && self.channels != 3 {
            return Err(format!("channels {} is not 1 or 3", self.channels));
        }
        if self.count == 0 {
            return Err("count is 0 (a dataset holds at least one record)".into());
        }
        if self.records_per_shard == 0 {
            return Err("records_per_shard is 0 (must be >= 1)".into());
        }
        if self.num_classes > MAX_CLASSES {
            return Err(format!("num_classes {} is above {MAX_CLASSES}", self.num_classes));
        }
        if self.labels.is_none() && self.num_classes != 0 {
            return Err(format!("num_classes is {} but there is no labels file", self.num_classes));
        }
        for f in self.shards.iter().map(|s| &s.file).chain(self.labels.iter().map(|l| &l.file)) {
            let p = Path::new(f);
            if p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(format!("file {f:?} is not inside the dataset folder"));
            }
        }
        for s in &self.shards {
            if !self.levels.contains(&s.level) {
                return Err(format!("shard {} has level {}, not one of {:?}", s.file, s.level, self.levels));
            }
            if s.count == 0 || s.count > self.records_per_shard {
                return Err(format!("shard {} holds {} records (1 to records_per_shard allowed)", s.file, s.count));
            }
        }
        Ok(())
    }
}

/// Directory name of a level.
pub fn level_dir(resolution: usize) -> String {
    format!("r{resolution}")
}

/// Path of shard `k` of a level, relative to the dataset folder.
pub fn shard_file(resolution: usize, k: usize) -> String {
    format!("{}/{k:05}.bin", level_dir(resolution))
}

/// Records per shard so that a full-resolution shard stays within `shard_bytes`.
pub fn records_per_shard(shard_bytes: u64, channels: usize, resolution: usize) -> u64 {
    (shard_bytes / (channels * resolution * resolution) as u64).max(1)
}

/// SHA-256 of a file, streamed, as lowercase hex.
pub fn sha256_file(path: &Path, mut progress: impl FnMut(u64)) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("{}: read failed", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        progress(n as u64);
    }
    Ok(hex(&h.finalize()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The state of an unfinished run, rewritten atomically each time a chunk of shards is complete. A re-run with
/// `--resume` checks `plan` against its own options, verifies the listed shards and continues after `consumed`
/// source items.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Journal {
    pub plan: serde_json::Value,
    pub channels: usize,
    pub resolution: usize,
    pub records_per_shard: u64,
    pub shards: Vec<ShardInfo>,
    pub labels: Vec<u32>,
    pub written: u64,
    /// Source items (records and skips) processed up to the last complete chunk.
    pub consumed: u64,
    pub skipped: BTreeMap<String, u64>,
    pub bytes_read: u64,
}

impl Journal {
    pub fn load(dir: &Path) -> Result<Option<Journal>> {
        let p = dir.join(JOURNAL);
        if !p.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?;
        Ok(Some(serde_json::from_str(&text).with_context(|| format!("{}: not a valid progress file", p.display()))?))
    }
}

struct LevelFile {
    resolution: usize,
    tmp: PathBuf,
    out: BufWriter<File>,
    hash: Sha256,
    bytes: u64,
}

/// Writes records chunk by chunk: every level's shard of a chunk is written to a temp file, synced and renamed into
/// place, then the journal is rewritten. A crash leaves only complete shards plus a journal that lists exactly
/// those; the manifest appears last, so a reader never sees an unfinished dataset.
pub struct ShardWriter {
    dir: PathBuf,
    levels: Vec<usize>,
    channels: usize,
    resolution: usize,
    per_shard: u64,
    open: Vec<LevelFile>,
    in_chunk: u64,
    last_consumed: u64,
    pub journal: Journal,
}

/// The keys on which two plans differ, as `key: was A, now B` (the whole plans when they are not objects).
fn plan_difference(was: &serde_json::Value, now: &serde_json::Value) -> String {
    let (Some(a), Some(b)) = (was.as_object(), now.as_object()) else { return format!("was {was}, now {now}") };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    let null = serde_json::Value::Null;
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| format!("{k}: was {}, now {}", a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null)))
        .collect::<Vec<_>>()
        .join("; ")
}

impl ShardWriter {
    /// Starts a fresh dataset in `dir` (created if needed, expected empty).
    pub fn create(
        dir: &Path,
        channels: usize,
        resolution: usize,
        per_shard: u64,
        plan: serde_json::Value,
    ) -> Result<Self> {
        crate::util::create_dir(dir)?;
        let journal = Journal {
            plan,
            channels,
            resolution,
            records_per_shard: per_shard,
            shards: vec![],
            labels: vec![],
            written: 0,
            consumed: 0,
            skipped: BTreeMap::new(),
            bytes_read: 0,
        };
        let w = Self::with_journal(dir, journal)?;
        w.save_journal()?;
        Ok(w)
    }

    /// Continues the unfinished run in `dir`: its journal must exist and match `plan`; listed shards are verified and
    /// anything written after the last complete chunk is removed.
    pub fn resume(dir: &Path, plan: &serde_json::Value) -> Result<Self> {
        let journal = Journal::load(dir)?.with_context(|| {
            format!("{}: no {JOURNAL}, nothing to resume (use --force to start clean)", dir.display())
        })?;
        if &journal.plan != plan {
            bail!(
                "{}: the interrupted run used other options ({}); resume with its options or use --force to start \
                 clean",
                dir.display(),
                plan_difference(&journal.plan, plan)
            );
        }
        for s in &journal.shards {
            let p = dir.join(&s.file);
            let ok = std::fs::metadata(&p).map(|m| m.len() == s.bytes).unwrap_or(false)
                && sha256_file(&p, |_| {})? == s.sha256;
            ensure!(ok, "{}: damaged or missing; cannot resume (use --force to start clean)", p.display());
        }
        let w = Self::with_journal(dir, journal)?;
        w.remove_strays()?;
        Ok(w)
    }

    fn with_journal(dir: &Path, journal: Journal) -> Result<Self> {
        ensure!(
            journal.resolution >= 4 && journal.resolution.is_power_of_two(),
            "resolution must be a power of two >= 4"
        );
        Ok(ShardWriter {
            dir: dir.to_path_buf(),
            levels: super::transform::level_resolutions(journal.resolution),
            channels: journal.channels,
            resolution: journal.resolution,
            per_shard: journal.records_per_shard,
            open: vec![],
            in_chunk: 0,
            last_consumed: journal.consumed,
            journal,
        })
    }

    /// Deletes shard files the journal does not list (written after the last complete chunk) and temp files.
    fn remove_strays(&self) -> Result<()> {
        let listed: std::collections::HashSet<&str> = self.journal.shards.iter().map(|s| s.file.as_str()).collect();
        for &r in &self.levels {
            let d = self.dir.join(level_dir(r));
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let rel = format!("{}/{}", level_dir(r), e.file_name().to_string_lossy());
                if !listed.contains(rel.as_str()) {
                    std::fs::remove_file(e.path()).with_context(|| format!("{}: cannot remove", e.path().display()))?;
                }
            }
        }
        Ok(())
    }

    fn save_journal(&self) -> Result<()> {
        let text = serde_json::to_string(&self.journal)?;
        write_bytes_atomic(&self.dir.join(JOURNAL), text.as_bytes())
    }

    pub fn written(&self) -> u64 {
        self.journal.written
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    fn open_chunk(&mut self) -> Result<()> {
        let k = self.journal.shards.len() / self.levels.len();
        for &r in &self.levels {
            let rel = shard_file(r, k);
            let path = self.dir.join(&rel);
            std::fs::create_dir_all(path.parent().unwrap())
                .with_context(|| format!("{}: cannot create folder", path.parent().unwrap().display()))?;
            let tmp = path.with_extension("bin.tmp");
            let f = File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
            self.open.push(LevelFile {
                resolution: r,
                tmp,
                out: BufWriter::with_capacity(1 << 20, f),
                hash: Sha256::new(),
                bytes: 0,
            });
        }
        Ok(())
    }

    /// Appends one record given as all its levels (full resolution first, as [`super::transform::levels_of_detail`]).
    /// `consumed` is the number of source items processed once this record is in; `label` is kept when given.
    pub fn push(&mut self, lods: &[Vec<u8>], label: Option<u32>, consumed: u64) -> Result<()> {
        ensure!(lods.len() == self.levels.len(), "record has {} levels, dataset {}", lods.len(), self.levels.len());
        if self.open.is_empty() {
            self.open_chunk()?;
        }
        for (lf, rec) in self.open.iter_mut().zip(lods) {
            ensure!(rec.len() == self.channels * lf.resolution * lf.resolution, "record size mismatch");
            lf.out.write_all(rec).with_context(|| format!("{}: write failed", lf.tmp.display()))?;
            lf.hash.update(rec);
            lf.bytes += rec.len() as u64;
        }
        if let Some(l) = label {
            self.journal.labels.push(l);
        }
        self.in_chunk += 1;
        self.journal.written += 1;
        self.last_consumed = consumed;
        if self.in_chunk == self.per_shard {
            self.close_chunk()?;
        }
        Ok(())
    }

    /// Records skipped source items (by reason) without closing a chunk.
    pub fn note_skip(&mut self, reason: &str) {
        *self.journal.skipped.entry(reason.to_string()).or_default() += 1;
    }

    fn close_chunk(&mut self) -> Result<()> {
        let first = self.journal.written - self.in_chunk;
        for lf in self.open.drain(..) {
            let LevelFile { resolution, tmp, out, hash, bytes } = lf;
            let f = out
                .into_inner()
                .map_err(|e| e.into_error())
                .with_context(|| format!("{}: write failed", tmp.display()))?;
            f.sync_all().with_context(|| format!("{}: cannot sync", tmp.display()))?;
            let k = first / self.per_shard;
            let rel = shard_file(resolution, k as usize);
            std::fs::rename(&tmp, self.dir.join(&rel))
                .with_context(|| format!("{}: cannot rename into place", tmp.display()))?;
            self.journal.shards.push(ShardInfo {
                level: resolution,
                file: rel,
                first,
                count: self.in_chunk,
                bytes,
                sha256: hex(&hash.finalize()),
            });
        }
        self.in_chunk = 0;
        self.journal.consumed = self.last_consumed;
        self.save_journal()
    }

    /// Closes the last chunk, writes labels and the manifest; removes the journal. Returns the manifest.
    pub fn finish(
        mut self,
        num_classes: u32,
        source: serde_json::Value,
        command: String,
        mut summary: serde_json::Value,
    ) -> Result<Manifest> {
        if self.in_chunk > 0 {
            self.close_chunk()?;
        }
        ensure!(self.journal.written > 0, "no image was written");
        let labels = if self.journal.labels.is_empty() {
            None
        } else {
            ensure!(self.journal.labels.len() as u64 == self.journal.written, "some records have labels and some not");
            let bytes: Vec<u8> = self.journal.labels.iter().flat_map(|l| l.to_le_bytes()).collect();
            write_bytes_atomic(&self.dir.join(LABELS), &bytes)?;
            Some(FileInfo { file: LABELS.into(), bytes: bytes.len() as u64, sha256: hex(&Sha256::digest(&bytes)) })
        };
        let mut shards = self.journal.shards.clone();
        // Level by level, each in record order.
        shards.sort_by_key(|s| (std::cmp::Reverse(s.level), s.first));
        // The summary is the caller's, written before the shard sizes were final: they are known now.
        if let serde_json::Value::Object(m) = &mut summary {
            m.insert("bytes_written".into(), shards.iter().map(|s| s.bytes).sum::<u64>().into());
        }
        let manifest = Manifest {
            format: FORMAT.into(),
            version: VERSION,
            resolution: self.resolution,
            channels: self.channels,
            count: self.journal.written,
            levels: self.levels.clone(),
            records_per_shard: self.per_shard,
            num_classes: if labels.is_some() { num_classes } else { 0 },
            labels,
            shards,
            source,
            command,
            summary,
        };
        let text = serde_json::to_string_pretty(&manifest)?;
        write_atomic(&self.dir.join(MANIFEST), |f| Ok(f.write_all(text.as_bytes())?))?;
        std::fs::remove_file(self.dir.join(JOURNAL))
            .with_context(|| format!("{}: cannot remove", self.dir.join(JOURNAL).display()))?;
        Ok(manifest)
    }
}

/// A dataset opened for reading: every shard memory-mapped, records addressed by (resolution, index).
pub struct Dataset {
    pub path: PathBuf,
    pub manifest: Manifest,
    pub resolution: usize,
    pub channels: usize,
    pub count: u64,
    pub levels: Vec<usize>,
    pub num_classes: u32,
    maps: BTreeMap<usize, Vec<memmap2::Mmap>>,
    labels: Option<Vec<u32>>,
}

impl Dataset {
    /// Opens a dataset folder (or its `manifest.json`), checks the manifest against the files and maps the shards.
    pub fn open(path: impl AsRef<Path>) -> Result<Dataset> {
        let mut dir = path.as_ref().to_path_buf();
        if dir.file_name().is_some_and(|n| n == MANIFEST) {
            dir.pop();
        }
        for msg in super::dest::recover_swap(&dir)? {
            eprintln!("{msg}");
        }
        if !dir.exists() {
            if let Some(old) = super::dest::live_old_folders(&dir).first() {
                bail!(
                    "{}: no such dataset: a running sg2 is replacing it ({} holds the previous one until then)",
                    dir.display(),
                    old.display()
                );
            }
            bail!("{}: no such dataset", dir.display());
        }
        let mp = dir.join(MANIFEST);
        if !mp.exists() {
            if dir.join(JOURNAL).exists() {
                bail!(
                    "{}: unfinished dataset (an interrupted run); re-run the create command with --resume",
                    dir.display()
                );
            }
            bail!("{}: not an sg2 dataset (no {MANIFEST})", dir.display());
        }
        let text = std::fs::read_to_string(&mp).with_context(|| format!("{}: cannot read", mp.display()))?;
        let manifest: Manifest =
            serde_json::from_str(&text).with_context(|| format!("{}: invalid manifest", mp.display()))?;
        ensure!(manifest.format == FORMAT, "{}: format is {:?}, expected {FORMAT:?}", mp.display(), manifest.format);
        ensure!(
            manifest.version == VERSION,
            "{}: format version {} is not supported (this sg2 reads {VERSION})",
            mp.display(),
            manifest.version
        );
        manifest.validate().map_err(|e| anyhow::anyhow!("{}: invalid manifest: {e}", mp.display()))?;
        ensure!(
            manifest.levels == super::transform::level_resolutions(manifest.resolution),
            "{}: levels {:?} do not go from the resolution down to 4",
            mp.display(),
            manifest.levels
        );
        let mut maps: BTreeMap<usize, Vec<memmap2::Mmap>> = BTreeMap::new();
        for &r in &manifest.levels {
            let shards: Vec<&ShardInfo> = manifest.shards.iter().filter(|s| s.level == r).collect();
            let mut expect_first = 0;
            let mut v = vec![];
            for s in shards {
                let p = dir.join(&s.file);
                ensure!(s.first == expect_first, "{}: shards of level {r} are not contiguous", mp.display());
                ensure!(
                    s.count == manifest.records_per_shard || s.first + s.count == manifest.count,
                    "{}: shard {} has {} records, expected {}",
                    mp.display(),
                    s.file,
                    s.count,
                    manifest.records_per_shard
                );
                ensure!(
                    s.bytes == s.count.saturating_mul(manifest.record_bytes(r) as u64),
                    "{}: shard {} size disagrees with its record count",
                    mp.display(),
                    s.file
                );
                let f = File::open(&p).with_context(|| format!("{}: missing shard", p.display()))?;
                let meta = f.metadata()?;
                ensure!(meta.is_file(), "{}: not a regular file (a shard file belongs here)", p.display());
                let len = meta.len();
                let why = if len < s.bytes { "truncated" } else { "longer than written: replaced or appended to" };
                ensure!(len == s.bytes, "{}: {len} bytes, the manifest says {} ({why})", p.display(), s.bytes);
                // Safety: shard files are never modified in place (written once, renamed into place).
                let m = unsafe { memmap2::Mmap::map(&f) }.with_context(|| format!("{}: cannot map", p.display()))?;
                v.push(m);
                expect_first = expect_first.saturating_add(s.count);
            }
            ensure!(
                expect_first == manifest.count,
                "{}: level {r} holds {expect_first} records, expected {}",
                mp.display(),
                manifest.count
            );
            maps.insert(r, v);
        }
        let labels = match &manifest.labels {
            None => None,
            Some(fi) => {
                let p = dir.join(&fi.file);
                let bytes = std::fs::read(&p).with_context(|| format!("{}: cannot read labels", p.display()))?;
                ensure!(
                    bytes.len() as u64 == manifest.count.saturating_mul(4),
                    "{}: {} bytes, expected {}",
                    p.display(),
                    bytes.len(),
                    manifest.count.saturating_mul(4)
                );
                let l: Vec<u32> = bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
                ensure!(
                    l.iter().all(|&x| x < manifest.num_classes),
                    "{}: a label is >= num_classes {}",
                    p.display(),
                    manifest.num_classes
                );
                Some(l)
            }
        };
        Ok(Dataset {
            path: dir,
            resolution: manifest.resolution,
            channels: manifest.channels,
            count: manifest.count,
            levels: manifest.levels.clone(),
            num_classes: manifest.num_classes,
            manifest,
            maps,
            labels,
        })
    }

    /// Record `index` at level `resolution`: uint8 CHW, `channels * resolution^2` bytes. Panics when out of range
    /// (use [`Dataset::has_level`] and `count` to check).
    pub fn record(&self, resolution: usize, index: u64) -> &[u8] {
        let maps = self.maps.get(&resolution).unwrap_or_else(|| panic!("dataset has no level {resolution}"));
        assert!(index < self.count, "record {index} out of range (count {})", self.count);
        let per = self.manifest.records_per_shard;
        let size = self.manifest.record_bytes(resolution);
        let off = (index % per) as usize * size;
        &maps[(index / per) as usize][off..off + size]
    }

    pub fn has_level(&self, resolution: usize) -> bool {
        self.maps.contains_key(&resolution)
    }

    pub fn label(&self, index: u64) -> Option<u32> {
        self.labels.as_ref().map(|l| l[index as usize])
    }

    /// A stable hash of what the dataset holds (its checksums and shape), for caches keyed by dataset.
    pub fn fingerprint(&self) -> String {
        let m = &self.manifest;
        let mut h = Sha256::new();
        h.update(format!("{} {} {} {}\n", m.resolution, m.channels, m.count, m.records_per_shard));
        for s in &m.shards {
            h.update(format!("{} {}\n", s.file, s.sha256));
        }
        if let Some(l) = &m.labels {
            h.update(format!("labels {} {}\n", m.num_classes, l.sha256));
        }
        hex(&h.finalize())[..16].to_string()
    }

    /// Bytes of all shard files.
    pub fn total_bytes(&self) -> u64 {
        self.manifest.shards.iter().map(|s| s.bytes).sum()
    }
}
