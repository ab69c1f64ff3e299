//! create_mnist, create_cifar10 and create_from_images on fixtures made here.

mod common;
use common::data::*;
use common::*;
use sg2::data::create::{create, CreateOptions};
use sg2::data::sources::{cifar::Cifar10, images::Images, mnist::Mnist, Source};
use sg2::data::transform::{center_crop_square, resize_lanczos, to_chw};
use sg2::data::Dataset;
use sg2::image_io::ImageU8;

fn opts(dest: &std::path::Path, res: usize, channels: Option<usize>) -> CreateOptions {
    let mut o = CreateOptions::new(dest, res);
    o.channels = channels;
    o.min_size = 0;
    o.progress = false;
    o.workers = 2;
    o
}

#[test]
fn mnist_gz_and_raw_padded_with_labels() {
    let t = tempfile::tempdir().unwrap();
    let (images, labels) = make_idx(&t.path().join("gz"), 25, true);
    make_idx(&t.path().join("raw"), 25, false);
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    create(&mut Mnist::open(&t.path().join("gz")).unwrap(), &opts(&a, 32, Some(1))).unwrap();
    create(&mut Mnist::open(&t.path().join("raw")).unwrap(), &opts(&b, 32, Some(1))).unwrap();
    assert_eq!(shard_hashes(&a), shard_hashes(&b));
    let ds = Dataset::open(&a).unwrap();
    assert_eq!((ds.count, ds.channels, ds.resolution, ds.num_classes), (25, 1, 32, 10));
    assert_eq!(ds.levels, vec![32, 16, 8, 4]);
    for i in 0..25u64 {
        assert_eq!(ds.label(i), Some(labels[i as usize] as u32));
        let rec = ds.record(32, i);
        let src = &images[i as usize * 784..(i as usize + 1) * 784];
        for y in 0..32 {
            for x in 0..32 {
                let inside = (2..30).contains(&y) && (2..30).contains(&x);
                let want = if inside { src[(y - 2) * 28 + (x - 2)] } else { 0 };
                assert_eq!(rec[y * 32 + x], want, "image {i} at ({y}, {x})");
            }
        }
    }
    // --rgb repeats the channel.
    let c = t.path().join("c");
    create(&mut Mnist::open(&t.path().join("gz")).unwrap(), &opts(&c, 32, Some(3))).unwrap();
    let rgb = Dataset::open(&c).unwrap();
    let (g, r) = (ds.record(32, 7), rgb.record(32, 7));
    assert_eq!(&r[..1024], g);
    assert_eq!(&r[1024..2048], g);
    assert_eq!(&r[2048..], g);
}

#[test]
fn mnist_errors_name_the_file() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("m");
    make_idx(&dir, 5, false);
    let p = dir.join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    let err = format!("{:#}", Mnist::open(&dir).err().unwrap());
    assert!(err.contains("train-images-idx3-ubyte") && err.contains("truncated"), "{err}");
    // Bytes after the data are not a truncation.
    std::fs::write(&p, [&bytes[..], b"tail"].concat()).unwrap();
    let err = format!("{:#}", Mnist::open(&dir).err().unwrap());
    assert!(err.contains("3924 data bytes, header says 3920 (bytes after the data"), "{err}");
    // Images other than 28x28 are refused, as the official tool asserts, not padded into another frame.
    let mut small = bytes.clone();
    small[8..12].copy_from_slice(&14u32.to_be_bytes());
    small.truncate(16 + 5 * 14 * 28);
    std::fs::write(&p, &small).unwrap();
    let err = format!("{:#}", Mnist::open(&dir).err().unwrap());
    assert!(err.contains("train-images-idx3-ubyte: images of 28x14, expected 28x28"), "{err}");
    let err = format!("{:#}", Mnist::open(t.path()).err().unwrap());
    assert!(err.contains("train-images-idx3-ubyte"), "{err}");
    // A truncated gzip.
    let gz = t.path().join("g");
    make_idx(&gz, 5, true);
    let p = gz.join("train-labels-idx1-ubyte.gz");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!("{:#}", Mnist::open(&gz).err().unwrap());
    assert!(err.contains("train-labels-idx1-ubyte.gz") && err.contains("gzip"), "{err}");
}

#[test]
fn cifar_tarball_and_folder_with_labels() {
    let t = tempfile::tempdir().unwrap();
    let tgz = t.path().join("cifar-10-python.tar.gz");
    let (data, labels) = make_cifar_tar(&tgz, 3, 4);
    let dest = t.path().join("c");
    let mut src = Cifar10::open(&tgz).unwrap();
    assert_eq!(src.len(), 12);
    create(&mut src, &opts(&dest, 32, Some(3))).unwrap();
    let ds = Dataset::open(&dest).unwrap();
    assert_eq!((ds.count, ds.channels, ds.num_classes), (12, 3, 10));
    for i in 0..12u64 {
        // The batches' CHW rows are the records as they are (no resize at 32).
        assert_eq!(ds.record(32, i), &data[i as usize * 3072..(i as usize + 1) * 3072], "image {i}");
        assert_eq!(ds.label(i), Some(labels[i as usize] as u32));
    }
    // The extracted folder gives the same dataset.
    let dir = t.path().join("x");
    std::fs::create_dir_all(&dir).unwrap();
    tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(&tgz).unwrap())).unpack(&dir).unwrap();
    let d2 = t.path().join("c2");
    create(&mut Cifar10::open(&dir).unwrap(), &opts(&d2, 32, Some(3))).unwrap();
    assert_eq!(shard_hashes(&dest), shard_hashes(&d2));
    // A missing batch in the middle is an error naming it, not a smaller dataset.
    std::fs::remove_file(dir.join("cifar-10-batches-py/data_batch_2")).unwrap();
    let err = format!("{:#}", Cifar10::open(&dir).err().unwrap());
    assert!(err.contains("data_batch_2 is missing or repeated"), "{err}");
    // A truncated tarball is an error naming it.
    let bytes = std::fs::read(&tgz).unwrap();
    let cut = t.path().join("cut.tar.gz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = format!("{:#}", Cifar10::open(&cut).err().unwrap());
    assert!(err.contains("cut.tar.gz"), "{err}");
}

/// The fixture's pickles load in Python as the real CIFAR batches do (so the reader is tested on the real layout).
#[test]
fn cifar_fixture_is_a_real_pickle() {
    let py = require_python(&["numpy"]);
    let t = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..2 * 3072).map(|i| (i % 251) as u8).collect();
    let p = t.path().join("data_batch_1");
    std::fs::write(&p, cifar_pickle(&data, &[3, 7])).unwrap();
    let script = "import pickle, sys, warnings\nwarnings.simplefilter('ignore')\n\
                  d = pickle.load(open(sys.argv[1], 'rb'), encoding='bytes')\n\
                  a = d[b'data']\nprint(a.shape, a.dtype, d[b'labels'], int(a.sum()), d[b'filenames'][1])";
    let out = std::process::Command::new(&py).args(["-c", script, s(&p)]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let sum: u64 = data.iter().map(|&v| v as u64).sum();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("(2, 3072) uint8 [3, 7] {sum} b'img_1.png'"));
}

#[test]
fn image_folder_recursive_sorted_and_zip() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("imgs");
    std::fs::create_dir_all(dir.join("b/c")).unwrap();
    let p0 = picture(20, 16, 3, 0);
    let p1 = picture(16, 24, 3, 1);
    let p2 = picture(18, 18, 3, 2);
    std::fs::write(dir.join("b/c/a.PNG"), png(&p1)).unwrap();
    std::fs::write(dir.join("a.webp"), webp(&p0)).unwrap();
    std::fs::write(dir.join("b/z.png"), png(&p2)).unwrap();
    std::fs::write(dir.join("b/readme.txt"), "not an image").unwrap();
    std::fs::write(dir.join("c.jpg"), b"\xff\xd8\xff broken").unwrap();
    let src = Images::open(&dir).unwrap();
    assert_eq!(src.names(), ["a.webp", "b/c/a.PNG", "b/z.png", "c.jpg"]);
    let dest = t.path().join("d");
    let summary = create(&mut Images::open(&dir).unwrap(), &opts(&dest, 8, None)).unwrap();
    assert_eq!((summary.written, summary.skipped.values().sum::<u64>()), (3, 1));
    let ds = Dataset::open(&dest).unwrap();
    assert_eq!(ds.channels, 3);
    for (i, p) in [&p0, &p1, &p2].iter().enumerate() {
        assert_eq!(ds.record(8, i as u64), &to_chw(&resize_lanczos(&center_crop_square(p), 8, 8))[..]);
    }
    let zip = t.path().join("imgs.zip");
    make_zip(&zip, &dir, "", false);
    let dz = t.path().join("dz");
    create(&mut Images::open(&zip).unwrap(), &opts(&dz, 8, None)).unwrap();
    assert_eq!(shard_hashes(&dest), shard_hashes(&dz));
}

#[test]
fn grayscale_folder_keeps_one_channel_unless_rgb() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("g");
    std::fs::create_dir_all(&dir).unwrap();
    let g = picture(8, 8, 1, 3);
    std::fs::write(dir.join("0.png"), png(&g)).unwrap();
    // A colour image in a grayscale set becomes grayscale with Pillow's weights.
    let c = ImageU8::new(8, 8, 3, [10u8, 200, 30].repeat(64));
    std::fs::write(dir.join("1.png"), png(&c)).unwrap();
    let d1 = t.path().join("d1");
    create(&mut Images::open(&dir).unwrap(), &opts(&d1, 8, None)).unwrap();
    let ds = Dataset::open(&d1).unwrap();
    assert_eq!(ds.channels, 1);
    assert_eq!(ds.record(8, 0), &g.data[..]);
    // L = (10 * 19595 + 200 * 38470 + 30 * 7471 + 32768) >> 16 = 8146848 >> 16 = 124.
    assert!(ds.record(8, 1).iter().all(|&v| v == 124));
    let d2 = t.path().join("d2");
    let (ok, _, err) = run_sg2(&[
        "dataset-tool",
        "create_from_images",
        "--source",
        s(&dir),
        "--dest",
        s(&d2),
        "--resolution",
        "8",
        "--rgb",
        "--quiet",
    ]);
    assert!(ok, "{err}");
    let ds = Dataset::open(&d2).unwrap();
    assert_eq!(ds.channels, 3);
    assert_eq!(&ds.record(8, 0)[64..128], &g.data[..]);

    // Undecodable files before the first grayscale image do not decide the channels (they are skipped).
    std::fs::write(dir.join("!bad.png"), b"\x89PNG\r\n\x1a\n garbage").unwrap();
    let d3 = t.path().join("d3");
    create(&mut Images::open(&dir).unwrap(), &opts(&d3, 8, None)).unwrap();
    let ds = Dataset::open(&d3).unwrap();
    assert_eq!((ds.channels, ds.count), (1, 2));
}

/// Links are followed once: a cycle back to the folder, a second link to a folder and a link to a file add nothing
/// and are counted; a link to a folder elsewhere is followed. A cycle used to turn 1 image into 41 records.
#[test]
fn links_are_followed_once_and_what_they_repeat_is_counted() {
    use std::os::unix::fs::symlink;
    let t = tempfile::tempdir().unwrap();
    let pics = t.path().join("pics");
    std::fs::create_dir_all(pics.join("sub")).unwrap();
    std::fs::create_dir_all(t.path().join("extra")).unwrap();
    for (i, p) in ["pics/a.png", "pics/sub/b.png", "extra/d.png"].iter().enumerate() {
        std::fs::write(t.path().join(p), png(&picture(8, 8, 3, i))).unwrap();
    }
    symlink(&pics, pics.join("loop")).unwrap();
    symlink(pics.join("sub"), pics.join("again")).unwrap();
    symlink(pics.join("sub/b.png"), pics.join("c.png")).unwrap();
    symlink(t.path().join("extra"), pics.join("outside")).unwrap();
    let src = Images::open(&pics).unwrap();
    assert_eq!(src.names(), ["a.png", "outside/d.png", "sub/b.png"]);
    assert_eq!(src.listing_skips(), [("reached twice through links", 3)]);

    let dest = t.path().join("ds");
    let (ok, out, err) = sg2(&[
        "dataset-tool",
        "create_from_images",
        "--source",
        s(&pics),
        "--dest",
        s(&dest),
        "--resolution",
        "8",
        "--quiet",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("wrote 3 images") && out.contains("skipped 3: reached twice through links 3"), "{out}");
}

/// A PNG header announcing 60000x60000 pixels is refused by the decoder's memory limit before any allocation:
/// counted as too large, not as a damaged file.
#[test]
fn decompression_bombs_count_as_too_large() {
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let crc = crc32fast::hash(&out[start..]);
        out.extend_from_slice(&crc.to_be_bytes());
    }
    let mut bomb = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = [60000u32.to_be_bytes(), 60000u32.to_be_bytes()].concat();
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut bomb, b"IHDR", &ihdr);
    chunk(&mut bomb, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut bomb, b"IEND", &[]);
    let t = tempfile::tempdir().unwrap();
    let pics = t.path().join("pics");
    std::fs::create_dir_all(&pics).unwrap();
    std::fs::write(pics.join("a.png"), png(&picture(8, 8, 3, 0))).unwrap();
    std::fs::write(pics.join("bomb.png"), &bomb).unwrap();
    std::fs::write(pics.join("junk.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let summary = create(&mut Images::open(&pics).unwrap(), &opts(&t.path().join("ds"), 8, Some(3))).unwrap();
    assert_eq!(summary.written, 1);
    let skipped: Vec<(&str, u64)> = summary.skipped.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(skipped, [("too large to decode", 1), ("undecodable", 1)]);
}

/// Devices and FIFOs with an image's name are skipped and counted (reading /dev/zero would never end, a FIFO
/// would block); a zip entry declaring more than the decoder's limit is skipped as too large before it is read.
#[test]
fn special_files_and_oversized_entries_are_skipped() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("src");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 0..2 {
        std::fs::write(dir.join(format!("{i}.png")), png(&picture(12, 12, 3, i))).unwrap();
    }
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.png")).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(dir.join("fifo.png")).status().unwrap().success());
    let d1 = t.path().join("d1");
    let s1 = create(&mut Images::open(&dir).unwrap(), &opts(&d1, 8, None)).unwrap();
    assert_eq!(s1.written, 2);
    assert_eq!(s1.skipped.get("not a regular file"), Some(&2), "{:?}", s1.skipped);

    std::fs::remove_file(dir.join("zero.png")).unwrap();
    std::fs::remove_file(dir.join("fifo.png")).unwrap();
    let zip_path = t.path().join("a.zip");
    make_zip(&zip_path, &dir, "", true);
    // 1.png's entry now declares 2 GiB in both headers.
    let mut b = std::fs::read(&zip_path).unwrap();
    for (at, size_at) in zip_headers(&b, "1.png").into_iter().zip([22, 24]) {
        b[at + size_at..at + size_at + 4].copy_from_slice(&0x8000_0000u32.to_le_bytes());
    }
    std::fs::write(&zip_path, &b).unwrap();
    let d2 = t.path().join("d2");
    let s2 = create(&mut Images::open(&zip_path).unwrap(), &opts(&d2, 8, None)).unwrap();
    assert_eq!(s2.written, 1);
    assert_eq!(s2.skipped.get("too large to decode"), Some(&1), "{:?}", s2.skipped);
}

/// A stored zip `root/a.zip` of 12x12 pictures named `names` (picture i for the i-th name).
fn png_zip(root: &std::path::Path, names: &[&str]) -> std::path::PathBuf {
    let dir = root.join("src");
    std::fs::create_dir_all(&dir).unwrap();
    for (i, name) in names.iter().enumerate() {
        std::fs::write(dir.join(name), png(&picture(12, 12, 3, i))).unwrap();
    }
    let zip_path = root.join("a.zip");
    make_zip(&zip_path, &dir, "", true);
    zip_path
}

/// Offsets of the local and central headers of `name` in zip bytes `b`.
fn zip_headers(b: &[u8], name: &str) -> [usize; 2] {
    [(b"PK\x03\x04", 26, 30), (b"PK\x01\x02", 28, 46)].map(|(sig, name_len_at, name_at)| {
        (0..b.len() - 4)
            .find(|&i| {
                let n = u16::from_le_bytes([b[i + name_len_at], b[i + name_len_at + 1]]) as usize;
                &b[i..i + 4] == sig && b.get(i + name_at..i + name_at + n) == Some(name.as_bytes())
            })
            .unwrap()
    })
}

/// A zip entry in a compression the reader lacks, or whose bytes fail their CRC, is one unreadable image: skipped
/// and counted, the entries after it still read; `--strict` makes it fatal, naming the entry.
#[test]
fn unreadable_zip_entries_are_skipped_and_counted() {
    let t = tempfile::tempdir().unwrap();
    let zip_path = png_zip(t.path(), &["0.png", "1.png", "2.png", "3.png"]);
    let mut b = std::fs::read(&zip_path).unwrap();
    // 1.png: compression method 12 (bzip2, not built in) in both headers.
    let [local, central] = zip_headers(&b, "1.png");
    b[local + 8..local + 10].copy_from_slice(&12u16.to_le_bytes());
    b[central + 10..central + 12].copy_from_slice(&12u16.to_le_bytes());
    // 2.png: a stored byte flipped after the PNG signature, so the entry's CRC-32 fails.
    let [local, _] = zip_headers(&b, "2.png");
    b[local + 30 + 5 + 20] ^= 0x55;
    std::fs::write(&zip_path, &b).unwrap();

    let d = t.path().join("d");
    let s = create(&mut Images::open(&zip_path).unwrap(), &opts(&d, 8, None)).unwrap();
    assert_eq!(s.written, 2);
    assert_eq!(s.skipped.get("unreadable"), Some(&2), "{:?}", s.skipped);
    let ds = Dataset::open(&d).unwrap();
    let want = |i: usize| {
        let p = picture(12, 12, 3, i);
        to_chw(&resize_lanczos(&center_crop_square(&p), 8, 8))
    };
    assert_eq!(ds.record(8, 0), &want(0)[..]);
    assert_eq!(ds.record(8, 1), &want(3)[..], "the entries after the damaged ones are read");

    let mut strict = opts(&t.path().join("s"), 8, None);
    strict.strict = true;
    let err = format!("{:#}", create(&mut Images::open(&zip_path).unwrap(), &strict).unwrap_err());
    assert!(err.contains("1.png: cannot read the entry") && err.contains("(--strict)"), "{err}");
}

/// An empty CIFAR batch is named as such.
#[test]
fn an_empty_cifar_batch_is_named() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("data_batch_1"), cifar_pickle(&[], &[])).unwrap();
    let err = format!("{:#}", Cifar10::open(t.path()).err().unwrap());
    assert!(err.contains("data_batch_1: an empty batch (0 images"), "{err}");
}

/// Two zip entries of one name: the archive reader keeps the last, and the hidden one is counted, not lost without
/// a word.
#[test]
fn a_repeated_zip_entry_name_is_counted() {
    let t = tempfile::tempdir().unwrap();
    let zip_path = png_zip(t.path(), &["a.png", "b.png", "c.png"]);
    let mut b = std::fs::read(&zip_path).unwrap();
    // b.png becomes a second a.png in both headers (same length, so nothing moves).
    for (at, name_at) in zip_headers(&b, "b.png").into_iter().zip([30, 46]) {
        b[at + name_at] = b'a';
    }
    std::fs::write(&zip_path, &b).unwrap();
    let d = t.path().join("d");
    let s = create(&mut Images::open(&zip_path).unwrap(), &opts(&d, 8, None)).unwrap();
    assert_eq!(s.written, 2);
    assert_eq!(s.skipped.get("zip entry repeated by a later one of its name"), Some(&1), "{:?}", s.skipped);
    let ds = Dataset::open(&d).unwrap();
    let want = to_chw(&resize_lanczos(&center_crop_square(&picture(12, 12, 3, 1)), 8, 8));
    assert_eq!(ds.record(8, 0), &want[..], "the last entry of the name is the one read");
}
