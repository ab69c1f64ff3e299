//! LMDB reading against LMDB itself (heed writes the fixtures), and damaged files: truncated, empty, a zeroed page.
//! Each must give one line naming data.mdb and the problem, never a crash.

mod common;
use common::data::*;
use common::s;
use sg2::data::create::{create, CreateOptions};
use sg2::data::sources::lsun::Lmdb;
use sg2::data::sources::{Payload, Source};
use std::path::Path;

/// Entries with inline values (small) and overflow values (larger than a page), enough for a two-level tree.
fn entries(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let len = if i % 5 == 0 { 5000 + i * 3 } else { 20 + i % 90 };
            (lsun_key(i), (0..len).map(|j| ((i * 31 + j * 7) % 251) as u8).collect())
        })
        .collect()
}

fn value(item: &sg2::data::sources::Item) -> &[u8] {
    match &item.payload {
        Payload::Encoded(b) => b,
        Payload::Raw(_) | Payload::TooLarge(_) | Payload::Unreadable(_) => panic!("not encoded bytes"),
    }
}

#[test]
fn reader_matches_lmdb_in_order_and_at_random() {
    let t = tempfile::tempdir().unwrap();
    let want = entries(3000);
    make_lmdb(&t.path().join("db"), &want);
    let mut src = Lmdb::open(&t.path().join("db")).unwrap();
    assert_eq!(src.len(), 3000);
    let all = src.read_range(0, 3000).unwrap();
    for (item, (k, v)) in all.iter().zip(&want) {
        assert_eq!((&item.key, value(item)), (k, &v[..]));
    }
    for i in [2999u64, 0, 1717, 5, 1718, 42] {
        let item = src.get(i).unwrap();
        assert_eq!((&item.key, value(&item)), (&want[i as usize].0, &want[i as usize].1[..]));
    }
    // An empty database is a valid LMDB with no entries.
    make_lmdb(&t.path().join("empty"), &[]);
    assert_eq!(Lmdb::open(&t.path().join("empty")).unwrap().len(), 0);
}

fn create_lsun(src: &Path, dest: &Path) -> (bool, String, String) {
    sg2(&["dataset-tool", "create_lsun", "--source", s(src), "--dest", s(dest), "--resolution", "8", "--quiet"])
}

fn assert_one_line_failure(ok: bool, err: &str, want: &[&str], dest: &Path) {
    assert!(!ok, "expected a failure");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: ") && !err.contains("panicked"), "{err}");
    for w in want {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
    assert!(!dest.exists(), "{} was created", dest.display());
    let mut partial = dest.as_os_str().to_owned();
    partial.push(".partial");
    assert!(!Path::new(&partial).exists(), "a .partial was left behind");
}

#[test]
fn truncated_empty_and_garbage_files_are_refused_in_one_line() {
    let t = tempfile::tempdir().unwrap();
    let db = t.path().join("cat_lmdb");
    make_lmdb(&db, &entries(400));
    let full = std::fs::read(db.join("data.mdb")).unwrap();
    let dest = t.path().join("out");

    // An interrupted copy: LMDB itself would die with SIGBUS here.
    std::fs::write(db.join("data.mdb"), &full[..full.len() / 2]).unwrap();
    let (ok, _, err) = create_lsun(&db, &dest);
    assert_one_line_failure(ok, &err, &["cat_lmdb/data.mdb: truncated: ", " KB of "], &dest);

    // Cut inside the meta pages.
    std::fs::write(db.join("data.mdb"), &full[..100]).unwrap();
    let (ok, _, err) = create_lsun(&db, &dest);
    assert_one_line_failure(ok, &err, &["data.mdb: too short for an LMDB"], &dest);

    std::fs::write(db.join("data.mdb"), b"").unwrap();
    let (ok, _, err) = create_lsun(&db, &dest);
    assert_one_line_failure(ok, &err, &["cat_lmdb/data.mdb: empty file (0 bytes)"], &dest);

    std::fs::write(db.join("data.mdb"), vec![7u8; 3 * 4096]).unwrap();
    let (ok, _, err) = create_lsun(&db, &dest);
    assert_one_line_failure(ok, &err, &["data.mdb: not a valid LMDB"], &dest);
}

/// Every page zeroed in turn: the structure pages are refused at open with the page named, the value pages make
/// their images undecodable; nothing crashes.
#[test]
fn any_zeroed_page_is_refused_or_skipped_never_a_crash() {
    let t = tempfile::tempdir().unwrap();
    let (lmdb, _) = lsun_fixture(t.path());
    let full = std::fs::read(lmdb.join("data.mdb")).unwrap();
    let pages = full.len() / 4096;
    let (mut refused, mut skipped) = (0, 0);
    for p in 2..pages {
        let mut bytes = full.clone();
        bytes[p * 4096..(p + 1) * 4096].fill(0);
        let db = t.path().join(format!("p{p}"));
        std::fs::create_dir_all(&db).unwrap();
        std::fs::write(db.join("data.mdb"), &bytes).unwrap();
        match Lmdb::open(&db) {
            Err(e) => {
                let e = format!("{e:#}");
                assert!(e.contains(&format!("data.mdb: damaged: page {p} (at byte {})", p * 4096)), "{e}");
                refused += 1;
            }
            Ok(mut src) => {
                let mut o = CreateOptions::new(t.path().join(format!("out{p}")), 8);
                (o.min_size, o.progress, o.channels) = (0, false, Some(3));
                let summary = create(&mut src, &o).unwrap();
                if summary.written < 7 {
                    skipped += 1;
                }
            }
        }
    }
    assert!(refused >= 1 && skipped >= 1, "refused {refused}, skipped {skipped} of {pages} pages");

    // Through the command line: one line, nothing written.
    let root = t.path().join("root_lmdb");
    std::fs::create_dir_all(&root).unwrap();
    let mut bytes = full.clone();
    let root_page = (2..pages).find(|&p| Lmdb::open(&t.path().join(format!("p{p}"))).is_err()).unwrap();
    bytes[root_page * 4096..(root_page + 1) * 4096].fill(0);
    std::fs::write(root.join("data.mdb"), &bytes).unwrap();
    let dest = t.path().join("ds");
    let (ok, _, err) = create_lsun(&root, &dest);
    assert_one_line_failure(ok, &err, &["root_lmdb/data.mdb: damaged: page"], &dest);
}
