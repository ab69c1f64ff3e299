//! A folder (searched recursively) or a zip of PNG, JPEG, WebP and GIF files, in sorted path order.

use super::{Item, Payload, Source};

/// Skip reason of files and folders reached twice (link cycles, several links to one place).
pub const SKIP_DUPLICATE: &str = "reached twice through links";
/// Skip reason of zip entries whose name a later entry repeats (the archive reader keeps the last one).
pub const SKIP_SHADOWED: &str = "zip entry repeated by a later one of its name";
/// Skip reason of devices, FIFOs and sockets with an image's name (reading them would block or never end).
pub const SKIP_SPECIAL: &str = "not a regular file";
use anyhow::{ensure, Context, Result};
use std::io::Read;
use std::path::{Path, PathBuf};

const EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "webp", "gif"];

fn is_image_name(name: &str) -> bool {
    name.rsplit_once('.').is_some_and(|(_, ext)| EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()))
}

enum Store {
    Dir(PathBuf),
    Zip(Box<zip::ZipArchive<std::fs::File>>),
}

pub struct Images {
    path: PathBuf,
    store: Store,
    /// Relative paths (folder) or entry names (zip), sorted.
    names: Vec<String>,
    /// Files and folders reached a second time through links (or hard links), left out.
    duplicates: u64,
    /// Devices, FIFOs and sockets, left out.
    special: u64,
    /// Zip entries hidden by a later entry of the same name.
    shadowed: u64,
}

/// A folder's files, following links to files and folders once: each file and folder is identified by (device,
/// inode), so a link cycle or a second link to the same place adds nothing. Real files and folders are walked before
/// links, so a file keeps its real path when it has one.
#[derive(Default)]
struct Walk {
    seen: std::collections::HashSet<(u64, u64)>,
    files: Vec<String>,
    links: std::collections::VecDeque<PathBuf>,
    duplicates: u64,
    special: u64,
}

impl Walk {
    fn id(p: &Path) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
    }

    fn run(root: &Path) -> Result<Walk> {
        let mut w = Walk::default();
        w.seen.extend(Self::id(root));
        w.dir(root, root)?;
        while let Some(link) = w.links.pop_front() {
            if link.is_dir() {
                if w.seen.insert(Self::id(&link).unwrap_or_default()) {
                    w.dir(root, &link)?;
                } else {
                    w.duplicates += 1;
                }
            } else {
                w.file(root, &link);
            }
        }
        Ok(w)
    }

    fn file(&mut self, root: &Path, p: &Path) {
        // A dangling link is listed and fails to read later, like any unreadable file.
        if std::fs::metadata(p).is_ok_and(|m| !m.is_file()) {
            self.special += 1;
        } else if Self::id(p).is_none_or(|id| self.seen.insert(id)) {
            self.files.push(p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
        } else {
            self.duplicates += 1;
        }
    }

    fn dir(&mut self, root: &Path, dir: &Path) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("{}: cannot list", dir.display()))?
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("{}: cannot list", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let ft = e.file_type()?;
            if ft.is_dir() {
                if self.seen.insert(Self::id(&p).unwrap_or_default()) {
                    self.dir(root, &p)?;
                } else {
                    self.duplicates += 1;
                }
            } else if ft.is_symlink() && (p.is_dir() || is_image_name(&e.file_name().to_string_lossy())) {
                self.links.push_back(p);
            } else if is_image_name(&e.file_name().to_string_lossy()) {
                self.file(root, &p);
            }
        }
        Ok(())
    }
}

/// The number of entries that a zip's end-of-central-directory record declares (zip64 included), counting every
/// entry, also those whose name repeats: the archive reader keeps one entry per name. None when unreadable.
fn zip_entry_count(path: &Path) -> Option<u64> {
    use std::io::{Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    // The record (22 bytes) ends the file, after a comment of at most 65535 bytes.
    let tail_len = len.min(22 + 65535 + 20);
    f.seek(SeekFrom::Start(len - tail_len)).ok()?;
    let mut tail = vec![0u8; tail_len as usize];
    f.read_exact(&mut tail).ok()?;
    let u16_at = |b: &[u8], i: usize| u16::from_le_bytes([b[i], b[i + 1]]) as u64;
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let eocd = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| &tail[i..i + 4] == b"PK\x05\x06" && i + 22 + u16_at(&tail, i + 20) as usize == tail.len())?;
    let total = u16_at(&tail, eocd + 10);
    if total != 0xffff {
        return Some(total);
    }
    // Zip64: the locator just before the record gives the zip64 record's offset; its total is at byte 32.
    let loc = eocd.checked_sub(20)?;
    if &tail[loc..loc + 4] != b"PK\x06\x07" {
        return Some(total);
    }
    f.seek(SeekFrom::Start(u64_at(&tail, loc + 8))).ok()?;
    let mut rec = [0u8; 40];
    f.read_exact(&mut rec).ok()?;
    (&rec[..4] == b"PK\x06\x06").then(|| u64_at(&rec, 32))
}

impl Images {
    pub fn open(path: &Path) -> Result<Images> {
        ensure!(path.exists(), "{}: no such file or folder", path.display());
        let (store, mut names, duplicates, special, shadowed) = if path.is_dir() {
            let w = Walk::run(path)?;
            (Store::Dir(path.to_path_buf()), w.files, w.duplicates, w.special, 0)
        } else {
            let f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
            let z = zip::ZipArchive::new(f)
                .with_context(|| format!("{}: not a folder or a zip archive (or a truncated zip)", path.display()))?;
            let names = z.file_names().filter(|n| !n.ends_with('/') && is_image_name(n)).map(String::from).collect();
            let shadowed = zip_entry_count(path).map_or(0, |n| n.saturating_sub(z.len() as u64));
            (Store::Zip(Box::new(z)), names, 0, 0, shadowed)
        };
        names.sort();
        ensure!(!names.is_empty(), "{}: holds no PNG, JPEG, WebP or GIF files", path.display());
        Ok(Images { path: path.to_path_buf(), store, names, duplicates, special, shadowed })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// An item as messages name it: `folder/name`, or `archive.zip:name`.
    pub fn item_path(&self, name: &str) -> String {
        match self.store {
            Store::Dir(ref root) => root.join(name).display().to_string(),
            Store::Zip(_) => format!("{}:{name}", self.path.display()),
        }
    }
}

impl Source for Images {
    fn len(&self) -> u64 {
        self.names.len() as u64
    }

    fn get(&mut self, index: u64) -> Result<Item> {
        let name = &self.names[index as usize];
        // Read at most the cap: a file or entry above it is too large to decode anyway, and a zip entry's declared
        // size may lie.
        let cap = super::MAX_DECODED_BYTES;
        let too_large = |n: u64| Item {
            key: name.clone(),
            payload: Payload::TooLarge(format!("{n} bytes, over the {} MiB limit", cap >> 20)),
            label: None,
        };
        let unreadable = |e: String| Item { key: name.clone(), payload: Payload::Unreadable(e), label: None };
        let mut bytes = vec![];
        match &mut self.store {
            Store::Dir(root) => {
                let p = root.join(name);
                let f = match std::fs::File::open(&p) {
                    Ok(f) => f,
                    Err(e) => return Ok(unreadable(format!("cannot open: {e}"))),
                };
                let len = f.metadata().map_or(0, |m| m.len());
                if len > cap {
                    return Ok(too_large(len));
                }
                if let Err(e) = f.take(cap + 1).read_to_end(&mut bytes) {
                    return Ok(unreadable(format!("cannot read: {e}")));
                }
            }
            Store::Zip(z) => {
                // One damaged or unsupported entry leaves the others readable: the archive seeks by offset.
                let e = match z.by_name(name) {
                    Ok(e) => e,
                    Err(e) => return Ok(unreadable(format!("cannot read the entry: {e}"))),
                };
                if e.size() > cap {
                    return Ok(too_large(e.size()));
                }
                if let Err(e) = e.take(cap + 1).read_to_end(&mut bytes) {
                    return Ok(unreadable(format!("cannot read the entry (damaged or truncated): {e}")));
                }
            }
        };
        if bytes.len() as u64 > cap {
            return Ok(too_large(bytes.len() as u64));
        }
        Ok(Item { key: name.clone(), payload: Payload::Encoded(bytes), label: None })
    }

    fn listing_skips(&self) -> Vec<(&'static str, u64)> {
        [(SKIP_DUPLICATE, self.duplicates), (SKIP_SPECIAL, self.special), (SKIP_SHADOWED, self.shadowed)]
            .into_iter()
            .filter(|s| s.1 > 0)
            .collect()
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({ "kind": "images", "path": self.path.display().to_string() })
    }
}
