//! create_lsun from an LMDB folder and from a zip: counts, pixels, levels of detail, skips, extraction.

mod common;
use common::data::*;
use common::*;
use sg2::data::create::{create, CreateOptions, SKIP_UNDECODABLE};
use sg2::data::sources::lsun::{extract_lmdb, open_source, Lmdb};
use sg2::data::sources::Source;
use sg2::data::transform::{center_crop_square, resize_lanczos, to_chw};
use sg2::data::Dataset;

fn opts(dest: &std::path::Path, res: usize) -> CreateOptions {
    let mut o = CreateOptions::new(dest, res);
    o.channels = Some(3);
    o.min_size = 0;
    o.progress = false;
    o.workers = 2;
    o
}

#[test]
fn lmdb_to_shards_pixels_levels_and_skips() {
    let t = tempfile::tempdir().unwrap();
    let (lmdb, pics) = lsun_fixture(t.path());
    let dest = t.path().join("out");
    let mut src = Lmdb::open(&lmdb).unwrap();
    assert_eq!(src.len(), 9);
    let summary = create(&mut src, &opts(&dest, 16)).unwrap();
    assert_eq!(summary.written, 7);
    assert_eq!(summary.skipped.get(SKIP_UNDECODABLE), Some(&2));
    let ds = Dataset::open(&dest).unwrap();
    assert_eq!((ds.count, ds.resolution, ds.channels, ds.num_classes), (7, 16, 3, 0));
    assert_eq!(ds.levels, vec![16, 8, 4]);
    assert_eq!(ds.label(0), None);
    // Records follow key order with the bad values left out. Lossless WebP: the expected record is the original
    // picture cropped and resized (the resize is checked against Pillow in the unit tests); JPEG: close to it.
    let good: Vec<_> = pics.iter().flatten().collect();
    for (i, (pic, is_jpeg)) in good.iter().enumerate() {
        let want = to_chw(&resize_lanczos(&center_crop_square(pic), 16, 16));
        let got = ds.record(16, i as u64);
        if *is_jpeg {
            let mad: f64 =
                got.iter().zip(&want).map(|(&a, &b)| (a as f64 - b as f64).abs()).sum::<f64>() / want.len() as f64;
            assert!(mad < 3.0, "record {i}: JPEG mean abs diff {mad}");
        } else {
            assert_eq!(got, &want[..], "record {i}");
        }
        // Level 8 is the exact 2x2 mean of level 16 rounded half to even (the first level has integer sums).
        let top = ds.record(16, i as u64);
        let lod = ds.record(8, i as u64);
        for c in 0..3 {
            for y in 0..8 {
                for x in 0..8 {
                    let at = |yy: usize, xx: usize| top[c * 256 + yy * 16 + xx] as u32;
                    let sum = at(2 * y, 2 * x) + at(2 * y, 2 * x + 1) + at(2 * y + 1, 2 * x) + at(2 * y + 1, 2 * x + 1);
                    let want = match sum % 4 {
                        0 | 1 => sum / 4,
                        3 => sum / 4 + 1,
                        _ => (sum / 4) + (sum / 4) % 2,
                    };
                    assert_eq!(lod[c * 64 + y * 8 + x] as u32, want);
                }
            }
        }
    }
}

/// The official exporter's levels, computed by numpy with the official code, must equal ours bit for bit.
#[test]
fn levels_match_official_numpy_code() {
    let py = require_python(&["numpy"]);
    let t = tempfile::tempdir().unwrap();
    let (lmdb, _) = lsun_fixture(t.path());
    let dest = t.path().join("out");
    create(&mut Lmdb::open(&lmdb).unwrap(), &opts(&dest, 32)).unwrap();
    let ds = Dataset::open(&dest).unwrap();
    let top: Vec<u8> = (0..ds.count).flat_map(|i| ds.record(32, i).to_vec()).collect();
    std::fs::write(t.path().join("top.bin"), &top).unwrap();
    let script = r#"
import sys, numpy as np
imgs = np.fromfile(sys.argv[1], np.uint8).reshape(-1, 3, 32, 32)
out = []
for img in imgs:
    for lod in range(4):
        if lod:
            img = img.astype(np.float32)
            img = (img[:, 0::2, 0::2] + img[:, 0::2, 1::2] + img[:, 1::2, 0::2] + img[:, 1::2, 1::2]) * 0.25
        quant = np.rint(img).clip(0, 255).astype(np.uint8)
        out.append(quant.tobytes())
sys.stdout.buffer.write(b''.join(out))
"#;
    let out = std::process::Command::new(&py).args(["-c", script, s(&t.path().join("top.bin"))]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut ours = vec![];
    for i in 0..ds.count {
        for &r in &ds.levels {
            ours.extend_from_slice(ds.record(r, i));
        }
    }
    assert_eq!(ours.len(), out.stdout.len());
    assert!(ours == out.stdout, "levels differ from the official numpy code");
}

#[test]
fn zip_gives_the_same_dataset_and_extraction_resumes() {
    let t = tempfile::tempdir().unwrap();
    let (lmdb, _) = lsun_fixture(t.path());
    let from_dir = t.path().join("from_dir");
    create(&mut Lmdb::open(&lmdb).unwrap(), &opts(&from_dir, 16)).unwrap();
    for stored in [false, true] {
        let zip = t.path().join(format!("cat-{stored}.zip"));
        make_zip(&zip, &lmdb, "cat/", stored);
        let dest = t.path().join(format!("from_zip_{stored}"));
        // An interrupted earlier extraction: the first part of data.mdb is already there.
        let lmdb_out = t.path().join(format!("from_zip_{stored}.lmdb"));
        std::fs::create_dir_all(&lmdb_out).unwrap();
        let full = std::fs::read(lmdb.join("data.mdb")).unwrap();
        std::fs::write(lmdb_out.join("data.mdb.partial"), &full[..full.len() / 3]).unwrap();
        let mut src = open_source(&zip, &dest, false).unwrap();
        assert_eq!(std::fs::read(lmdb_out.join("data.mdb")).unwrap(), full);
        assert!(!lmdb_out.join("data.mdb.partial").exists());
        create(&mut src, &opts(&dest, 16)).unwrap();
        assert_eq!(shard_hashes(&dest), shard_hashes(&from_dir));
    }
}

#[test]
fn corrupt_partial_extraction_fails_its_crc_and_is_removed() {
    let t = tempfile::tempdir().unwrap();
    let (lmdb, _) = lsun_fixture(t.path());
    let zip = t.path().join("cat.zip");
    make_zip(&zip, &lmdb, "cat/", false);
    let out = t.path().join("x.lmdb");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("data.mdb.partial"), vec![0xabu8; 100]).unwrap();
    let err = format!("{:#}", extract_lmdb(&zip, &out, false).unwrap_err());
    assert!(err.contains("CRC"), "{err}");
    assert!(!out.join("data.mdb.partial").exists() && !out.join("data.mdb").exists());
    extract_lmdb(&zip, &out, false).unwrap();
    assert_eq!(std::fs::read(out.join("data.mdb")).unwrap(), std::fs::read(lmdb.join("data.mdb")).unwrap());
}

#[test]
fn cli_create_lsun_and_error_paths() {
    let t = tempfile::tempdir().unwrap();
    let (lmdb, _) = lsun_fixture(t.path());
    let dest = t.path().join("ds");
    let (ok, out, err) = run_sg2(&[
        "dataset-tool",
        "create_lsun",
        "--source",
        s(&lmdb),
        "--dest",
        s(&dest),
        "--resolution",
        "8",
        "--min-size",
        "0",
        "--quiet",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("wrote 7 images") && out.contains("undecodable 2"), "{out}");
    let before = shard_hashes(&dest);

    // An existing --dest is refused and left as it was.
    let (ok, _, err) =
        run_sg2(&["dataset-tool", "create_lsun", "--source", s(&lmdb), "--dest", s(&dest), "--resolution", "8"]);
    assert!(!ok && err.contains("already exists") && err.contains("--force"), "{err}");
    assert_eq!(shard_hashes(&dest), before);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    // --strict makes the corrupt value fatal; the old dataset survives.
    let (ok, _, err) = run_sg2(&[
        "dataset-tool",
        "create_lsun",
        "--source",
        s(&lmdb),
        "--dest",
        s(&dest),
        "--resolution",
        "8",
        "--min-size",
        "0",
        "--force",
        "--strict",
        "--quiet",
    ]);
    assert!(!ok && err.contains("--strict") && err.contains(&lsun_key(3)), "{err}");
    assert_eq!(shard_hashes(&dest), before);

    // Default --min-size (= resolution 128): every fixture image is smaller, so all are skipped.
    let (ok, _, err) = run_sg2(&[
        "dataset-tool",
        "create_lsun",
        "--source",
        s(&lmdb),
        "--dest",
        s(&t.path().join("big")),
        "--resolution",
        "128",
        "--quiet",
    ]);
    assert!(!ok && err.contains("no image was written") && err.contains("smaller than --min-size"), "{err}");
    assert!(!t.path().join("big").exists() && !t.path().join("big.partial").exists());

    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![s(&t.path().join("nope")).into()], "no such file"),
        (vec![s(t.path()).into()], "not an LMDB folder"),
    ];
    for (src, want) in cases {
        let d = t.path().join("e");
        let (ok, _, err) = run_sg2(&["dataset-tool", "create_lsun", "--source", &src[0], "--dest", s(&d)]);
        assert!(!ok && err.contains(want), "{err}");
        assert!(err.starts_with("error: ") && err.contains(&src[0]), "{err}");
    }
    // A data.mdb that is not an LMDB.
    let fake = t.path().join("fake");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(fake.join("data.mdb"), vec![7u8; 8192]).unwrap();
    let (ok, _, err) =
        run_sg2(&["dataset-tool", "create_lsun", "--source", s(&fake), "--dest", s(&t.path().join("f"))]);
    assert!(!ok && err.contains("not a valid LMDB") && err.contains("fake"), "{err}");
    // A truncated zip.
    let zip = t.path().join("cat.zip");
    make_zip(&zip, &lmdb, "cat/", false);
    let bytes = std::fs::read(&zip).unwrap();
    let cut = t.path().join("cut.zip");
    std::fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
    let (ok, _, err) = run_sg2(&["dataset-tool", "create_lsun", "--source", s(&cut), "--dest", s(&t.path().join("z"))]);
    assert!(!ok && err.contains("truncated") && err.contains("cut.zip"), "{err}");
    // --force on a folder that is not a dataset is refused and nothing in it is touched.
    let mine = t.path().join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    let (ok, _, err) = run_sg2(&["dataset-tool", "create_lsun", "--source", s(&lmdb), "--dest", s(&mine), "--force"]);
    assert!(!ok && err.contains("not an sg2 dataset"), "{err}");
    assert_eq!(std::fs::read_to_string(mine.join("notes.txt")).unwrap(), "keep me");
}

#[test]
fn wide_crop_as_official() {
    let t = tempfile::tempdir().unwrap();
    // Canvas 16, band 12: the 40x30 picture fits, the other two are skipped.
    let pics = [picture(40, 30, 3, 0), picture(12, 20, 3, 1), picture(32, 16, 3, 2)];
    let entries: Vec<_> = pics.iter().enumerate().map(|(i, p)| (lsun_key(i), webp(p))).collect();
    let lmdb = t.path().join("cars");
    make_lmdb(&lmdb, &entries);
    let dest = t.path().join("wide");
    let mut o = opts(&dest, 16);
    o.crop = sg2::data::create::Crop::Wide { width: 16, height: 12 };
    let summary = create(&mut Lmdb::open(&lmdb).unwrap(), &o).unwrap();
    // 12x20: narrower than 16; 32x16: ch = round(16 * 16 / 32) = 8 < 12. Both skipped.
    assert_eq!(summary.written, 1);
    assert_eq!(summary.skipped.values().sum::<u64>(), 2);
    let ds = Dataset::open(&dest).unwrap();
    let rec = ds.record(16, 0);
    // ch = round(16 * 30 / 40) = 12 <= 30 rows: keep rows 9..21, resize 40x12 -> 16x12, rows 2..14 of the canvas.
    let band = resize_lanczos(&pics[0].crop(0, 9, 40, 12), 16, 12);
    for c in 0..3 {
        for y in 0..16 {
            for x in 0..16 {
                let want = if (2..14).contains(&y) { band.data[((y - 2) * 16 + x) * 3 + c] } else { 0 };
                assert_eq!(rec[c * 256 + y * 16 + x], want, "c{c} y{y} x{x}");
            }
        }
    }
}
