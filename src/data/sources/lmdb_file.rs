//! A read-only reader of LMDB data files (`data.mdb`) as LMDB 0.9 writes them on 64-bit little-endian machines
//! (LSUN's files), through positioned reads with every offset checked against the page and the file.
//!
//! LMDB itself maps the file and trusts it: a short file (an interrupted copy) dies with SIGBUS, a damaged page
//! with SIGSEGV. Here the meta pages are checked first, then the main tree's branch and leaf pages are walked once
//! at open (about 60 MB per million entries), so a truncated or damaged file is refused with the page at fault
//! before any output exists. Values are read on demand; their page ranges were checked during the walk.

use crate::util::human_bytes;
use anyhow::{bail, ensure, Context, Result};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: u32 = 0xBEEF_C0DE;
const DATA_VERSION: u32 = 1;
/// Page header: pgno (8), pad (2), flags (2), lower (2), upper (2).
const PAGE_HEADER: usize = 16;
/// Node header: lo (2), hi (2), flags (2), ksize (2).
const NODE_HEADER: usize = 8;
const P_BRANCH: u16 = 0x01;
const P_LEAF: u16 = 0x02;
const P_META: u16 = 0x08;
const P_LEAF2: u16 = 0x20;
const F_BIGDATA: u16 = 0x01;
const MDB_DUPSORT: u16 = 0x04;
/// Offsets in a meta page (header included): magic, version, mapsize, the free DB (whose pad is the page size) and
/// the main DB (48 bytes each), last page, transaction id.
const META_MAGIC: usize = 16;
const META_VERSION: usize = 20;
const META_PSIZE: usize = 40;
const META_MAIN_DB: usize = 88;
const META_LAST_PG: usize = 136;
const META_TXNID: usize = 144;
const META_END: usize = 152;
/// LMDB never builds deeper trees in practice (a depth of 10 holds more than 100^9 entries).
const MAX_DEPTH: u16 = 32;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

struct Meta {
    psize: u64,
    last_pg: u64,
    txnid: u64,
    db_flags: u16,
    depth: u16,
    entries: u64,
    root: u64,
}

/// Where a value lives: inside its leaf page, or on overflow pages.
#[derive(Clone, Copy)]
enum ValueAt {
    Inline { offset: usize, len: usize },
    Overflow { pgno: u64, len: usize },
}

/// One leaf node, its bounds checked.
struct Node {
    key: std::ops::Range<usize>,
    value: ValueAt,
}

/// A leaf page read and checked, with its nodes.
pub struct Leaf {
    pgno: u64,
    page: Vec<u8>,
    nodes: Vec<Node>,
}

pub struct LmdbFile {
    path: PathBuf,
    file: File,
    psize: u64,
    /// Pages the file holds.
    file_pages: u64,
    /// The last page in use, and the bytes the file needs by it (`(last_pg + 1) * psize`).
    last_pg: u64,
    expected_bytes: u64,
    file_bytes: u64,
    /// The main tree's leaf pages in key order, each with the index of its first entry.
    leaves: Vec<(u64, u64)>,
    entries: u64,
}

impl LmdbFile {
    /// Opens `path` (a `data.mdb`), checks its meta pages and walks the main tree's branch and leaf pages.
    pub fn open(path: &Path) -> Result<LmdbFile> {
        let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        let file_bytes = file.metadata().with_context(|| format!("{}: cannot stat", path.display()))?.len();
        ensure!(file_bytes > 0, "{}: empty file (0 bytes), not an LMDB (an interrupted copy?)", path.display());
        let mut lm = LmdbFile {
            path: path.to_path_buf(),
            file,
            psize: 0,
            file_pages: 0,
            last_pg: 0,
            expected_bytes: 0,
            file_bytes,
            leaves: vec![],
            entries: 0,
        };
        let m0 = lm.read_meta(0, 0)?;
        let m1 = lm.read_meta(1, m0.psize)?;
        ensure!(m0.psize == m1.psize, "{}: damaged: the two meta pages disagree on the page size", path.display());
        // LMDB uses the meta page of the later transaction.
        let m = if m1.txnid > m0.txnid { m1 } else { m0 };
        lm.psize = m.psize;
        lm.file_pages = file_bytes / m.psize;
        lm.last_pg = m.last_pg;
        lm.expected_bytes = (m.last_pg + 1).saturating_mul(m.psize);
        ensure!(
            m.db_flags & MDB_DUPSORT == 0,
            "{}: the main database has duplicate keys (not an LSUN-style LMDB)",
            path.display()
        );
        lm.entries = m.entries;
        if m.root == u64::MAX {
            ensure!(m.entries == 0, "{}: damaged: no root page but {} entries", path.display(), m.entries);
            return Ok(lm);
        }
        ensure!(m.depth >= 1 && m.depth <= MAX_DEPTH, "{}: damaged: tree depth {}", path.display(), m.depth);
        let found = lm.walk(m.root, m.depth)?;
        ensure!(
            found == m.entries,
            "{}: damaged: the tree holds {found} entries, the meta page says {}",
            path.display(),
            m.entries
        );
        Ok(lm)
    }

    fn truncated(&self) -> anyhow::Error {
        anyhow::anyhow!(
            "{}: truncated: {} of {}",
            self.path.display(),
            human_bytes(self.file_bytes),
            human_bytes(self.expected_bytes)
        )
    }

    fn read_meta(&self, index: u64, psize: u64) -> Result<Meta> {
        let at = index * psize;
        let mut b = [0u8; META_END];
        if self.file_bytes < at + META_END as u64 {
            bail!(
                "{}: too short for an LMDB ({}): a truncated copy?",
                self.path.display(),
                human_bytes(self.file_bytes)
            );
        }
        self.file.read_exact_at(&mut b, at).with_context(|| format!("{}: read failed", self.path.display()))?;
        let what = format!("{}: not a valid LMDB", self.path.display());
        ensure!(u32_at(&b, META_MAGIC) == MAGIC, "{what} (meta page {index} has no LMDB magic number)");
        ensure!(u16_at(&b, 10) & P_META != 0, "{what} (page {index} is not a meta page)");
        let version = u32_at(&b, META_VERSION);
        ensure!(version == DATA_VERSION, "{what} (data format version {version}; this reader knows {DATA_VERSION})");
        let psize = u32_at(&b, META_PSIZE) as u64;
        ensure!(
            psize.is_power_of_two() && (512..=65536).contains(&psize),
            "{what} (meta page {index} gives page size {psize})"
        );
        let db = META_MAIN_DB;
        Ok(Meta {
            psize,
            last_pg: u64_at(&b, META_LAST_PG),
            txnid: u64_at(&b, META_TXNID),
            db_flags: u16_at(&b, db + 4),
            depth: u16_at(&b, db + 6),
            entries: u64_at(&b, db + 32),
            root: u64_at(&b, db + 40),
        })
    }

    fn damaged(&self, pgno: u64, why: &str) -> anyhow::Error {
        anyhow::anyhow!("{}: damaged: page {pgno} (at byte {}) {why}", self.path.display(), pgno * self.psize)
    }

    /// Reads page `pgno` whole, checking that the file holds it and that it says it is that page.
    fn read_page(&self, pgno: u64) -> Result<Vec<u8>> {
        if pgno < 2 || pgno > self.last_pg {
            return Err(self.damaged(pgno, &format!("is referenced but lies outside pages 2..={}", self.last_pg)));
        }
        if pgno >= self.file_pages {
            return Err(self.truncated());
        }
        let mut page = vec![0u8; self.psize as usize];
        self.file
            .read_exact_at(&mut page, pgno * self.psize)
            .with_context(|| format!("{}: read failed at page {pgno}", self.path.display()))?;
        if page.iter().all(|&b| b == 0) {
            return Err(self.damaged(pgno, "is all zeros"));
        }
        if u64_at(&page, 0) != pgno {
            return Err(self.damaged(pgno, "has a wrong page number in its header"));
        }
        Ok(page)
    }

    /// Node offsets of a branch or leaf page, checked to lie inside its node area.
    fn node_offsets(&self, pgno: u64, page: &[u8]) -> Result<Vec<usize>> {
        let (lower, upper) = (u16_at(page, 12) as usize, u16_at(page, 14) as usize);
        let ps = page.len();
        if lower < PAGE_HEADER || lower > upper || upper > ps || !(lower - PAGE_HEADER).is_multiple_of(2) {
            return Err(self.damaged(pgno, "has an invalid free-space header"));
        }
        let n = (lower - PAGE_HEADER) / 2;
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let off = u16_at(page, PAGE_HEADER + 2 * i) as usize;
            if off < upper || off + NODE_HEADER > ps {
                return Err(self.damaged(pgno, &format!("has node {i} outside the page")));
            }
            let ksize = u16_at(page, off + 6) as usize;
            if off + NODE_HEADER + ksize > ps {
                return Err(self.damaged(pgno, &format!("has node {i}'s key outside the page")));
            }
            out.push(off);
        }
        Ok(out)
    }

    /// Depth-first walk from `root`, recording the leaf pages in key order; returns the number of entries.
    fn walk(&mut self, root: u64, depth: u16) -> Result<u64> {
        // (page, level): level 1 is a leaf.
        let mut stack = vec![(root, depth)];
        let mut visited = 0u64;
        let mut first = 0u64;
        while let Some((pgno, level)) = stack.pop() {
            visited += 1;
            if visited > self.last_pg {
                return Err(self.damaged(pgno, "is part of a cycle in the tree"));
            }
            let page = self.read_page(pgno)?;
            let flags = u16_at(&page, 10);
            if level > 1 {
                if flags & P_BRANCH == 0 {
                    return Err(self.damaged(pgno, "should be a branch page"));
                }
                let offs = self.node_offsets(pgno, &page)?;
                if offs.is_empty() {
                    return Err(self.damaged(pgno, "is an empty branch page"));
                }
                // Children in reverse, so the stack pops them in key order.
                for &off in offs.iter().rev() {
                    let child = u16_at(&page, off) as u64
                        | (u16_at(&page, off + 2) as u64) << 16
                        | (u16_at(&page, off + 4) as u64) << 32;
                    stack.push((child, level - 1));
                }
            } else {
                if flags & P_LEAF == 0 || flags & P_LEAF2 != 0 {
                    return Err(self.damaged(pgno, "should be a leaf page"));
                }
                let leaf = self.parse_leaf(pgno, page)?;
                self.leaves.push((pgno, first));
                first += leaf.nodes.len() as u64;
            }
        }
        Ok(first)
    }

    fn parse_leaf(&self, pgno: u64, page: Vec<u8>) -> Result<Leaf> {
        let offs = self.node_offsets(pgno, &page)?;
        let mut nodes = Vec::with_capacity(offs.len());
        for (i, off) in offs.into_iter().enumerate() {
            let dsize = u16_at(&page, off) as usize | (u16_at(&page, off + 2) as usize) << 16;
            let flags = u16_at(&page, off + 4);
            let ksize = u16_at(&page, off + 6) as usize;
            let data = off + NODE_HEADER + ksize;
            let key = off + NODE_HEADER..data;
            if flags & !F_BIGDATA != 0 {
                return Err(
                    self.damaged(pgno, &format!("has node {i} with flags {flags:#x} (sub-databases are not read)"))
                );
            }
            let value = if flags & F_BIGDATA != 0 {
                if data + 8 > page.len() {
                    return Err(self.damaged(pgno, &format!("has node {i}'s overflow page number outside the page")));
                }
                let opg = u64_at(&page, data);
                let pages = (PAGE_HEADER + dsize).div_ceil(self.psize as usize) as u64;
                if opg < 2 || opg.saturating_add(pages - 1) > self.last_pg {
                    return Err(self.damaged(pgno, &format!("has node {i} pointing outside the file's pages")));
                }
                if opg + pages > self.file_pages {
                    return Err(self.truncated());
                }
                ValueAt::Overflow { pgno: opg, len: dsize }
            } else {
                if data + dsize > page.len() {
                    return Err(self.damaged(pgno, &format!("has node {i}'s value outside the page")));
                }
                ValueAt::Inline { offset: data, len: dsize }
            };
            nodes.push(Node { key, value });
        }
        Ok(Leaf { pgno, page, nodes })
    }

    /// Number of entries of the main database.
    pub fn len(&self) -> u64 {
        self.entries
    }

    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The leaf holding entry `index` and the entry's position in it; `cached` is reused when it is that leaf.
    pub fn leaf_for(&self, index: u64, cached: Option<Leaf>) -> Result<(Leaf, usize)> {
        ensure!(index < self.entries, "{}: entry {index} out of range ({} entries)", self.path.display(), self.entries);
        let k = self.leaves.partition_point(|&(_, first)| first <= index) - 1;
        let (pgno, first) = self.leaves[k];
        let leaf = match cached {
            Some(l) if l.pgno == pgno => l,
            _ => {
                let page = self.read_page(pgno)?;
                self.parse_leaf(pgno, page)?
            }
        };
        Ok((leaf, (index - first) as usize))
    }

    /// Key and value of node `i` of `leaf`.
    pub fn entry(&self, leaf: &Leaf, i: usize) -> Result<(Vec<u8>, Vec<u8>)> {
        let node = &leaf.nodes[i];
        let key = leaf.page[node.key.clone()].to_vec();
        let value = match node.value {
            ValueAt::Inline { offset, len } => leaf.page[offset..offset + len].to_vec(),
            ValueAt::Overflow { pgno, len } => {
                let mut v = vec![0u8; len];
                self.file
                    .read_exact_at(&mut v, pgno * self.psize + PAGE_HEADER as u64)
                    .with_context(|| format!("{}: read failed at page {pgno}", self.path.display()))?;
                v
            }
        };
        Ok((key, value))
    }
}

impl Leaf {
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}
