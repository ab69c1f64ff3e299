//! Fixtures for the dataset tests, all made here: images with known pixels, LSUN-style LMDBs, zips, IDX files and
//! a CIFAR-style tarball whose pickles follow the layout of the real (Python 2) files.

use image::ImageEncoder;
use sg2::image_io::ImageU8;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A smooth, deterministic picture (JPEG-friendly) with some texture.
pub fn picture(w: usize, h: usize, c: usize, salt: usize) -> ImageU8 {
    let mut d = Vec::with_capacity(w * h * c);
    for y in 0..h {
        for x in 0..w {
            for k in 0..c {
                let v =
                    (x * 255 / w.max(1) + y * 128 / h.max(1) + k * 60 + salt * 37 + ((x / 4 + y / 4) % 2) * 20) % 256;
                d.push(v as u8);
            }
        }
    }
    ImageU8::new(w, h, c, d)
}

fn color(c: u32) -> image::ExtendedColorType {
    if c == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    }
}

pub fn webp(p: &ImageU8) -> Vec<u8> {
    let mut out = vec![];
    image::codecs::webp::WebPEncoder::new_lossless(&mut out)
        .write_image(&p.data, p.width, p.height, color(p.channels))
        .unwrap();
    out
}

pub fn jpeg(p: &ImageU8, quality: u8) -> Vec<u8> {
    let mut out = vec![];
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .write_image(&p.data, p.width, p.height, color(p.channels))
        .unwrap();
    out
}

pub fn png(p: &ImageU8) -> Vec<u8> {
    p.encode_png().unwrap()
}

/// An LMDB in LSUN's layout: the unnamed database, hex keys, encoded images as values.
pub fn make_lmdb(dir: &Path, entries: &[(String, Vec<u8>)]) {
    std::fs::create_dir_all(dir).unwrap();
    let env = unsafe { heed::EnvOpenOptions::new().map_size(64 << 20).open(dir) }.unwrap();
    let mut wtxn = env.write_txn().unwrap();
    let db: heed::Database<heed::types::Bytes, heed::types::Bytes> = env.create_database(&mut wtxn, None).unwrap();
    for (k, v) in entries {
        db.put(&mut wtxn, k.as_bytes(), v).unwrap();
    }
    wtxn.commit().unwrap();
    env.prepare_for_closing().wait();
}

/// Zips the files of `dir` under `prefix/` (as LSUN's `cat.zip` holds `cat/data.mdb`).
pub fn make_zip(zip_path: &Path, dir: &Path, prefix: &str, stored: bool) {
    let f = std::fs::File::create(zip_path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    let method = if stored { zip::CompressionMethod::Stored } else { zip::CompressionMethod::Deflated };
    let opts = zip::write::SimpleFileOptions::default().compression_method(method);
    let mut files = vec![];
    collect(dir, dir, &mut files);
    files.sort();
    for rel in files {
        z.start_file(format!("{prefix}{rel}"), opts).unwrap();
        z.write_all(&std::fs::read(dir.join(&rel)).unwrap()).unwrap();
    }
    z.finish().unwrap();
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(root, &p, out);
        } else {
            out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
        }
    }
}

/// The key of item `i` as LSUN writes them (40 hex digits), ordered by `i`.
pub fn lsun_key(i: usize) -> String {
    format!("{:040x}", i * 7919 + 1)
}

/// A small LSUN-like LMDB: WebP and JPEG values of varied sizes plus one corrupt and one truncated value.
/// Returns the folder and the source pictures in key order (`None` for the bad values).
pub fn lsun_fixture(root: &Path) -> (PathBuf, Vec<Option<(ImageU8, bool)>>) {
    let sizes = [(40, 30), (30, 50), (64, 64), (48, 36), (33, 47), (20, 20), (50, 40)];
    let mut entries = vec![];
    let mut pics = vec![];
    for (i, &(w, h)) in sizes.iter().enumerate() {
        let p = picture(w, h, 3, i);
        let is_jpeg = i % 3 == 1;
        entries.push((lsun_key(entries.len()), if is_jpeg { jpeg(&p, 95) } else { webp(&p) }));
        pics.push(Some((p, is_jpeg)));
        if i == 2 {
            entries.push((lsun_key(entries.len()), b"RIFF\x10\x00\x00\x00WEBPnot really an image".to_vec()));
            pics.push(None);
        }
        if i == 4 {
            let full = webp(&picture(32, 32, 3, 99));
            entries.push((lsun_key(entries.len()), full[..full.len() / 2].to_vec()));
            pics.push(None);
        }
    }
    let dir = root.join("lmdb");
    make_lmdb(&dir, &entries);
    (dir, pics)
}

/// IDX files of `n` 28x28 images and labels, gzipped or raw.
pub fn make_idx(dir: &Path, n: usize, gz: bool) -> (Vec<u8>, Vec<u8>) {
    std::fs::create_dir_all(dir).unwrap();
    let images: Vec<u8> = (0..n * 784).map(|i| ((i * 31 + i / 784 * 7) % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| ((i * 3) % 10) as u8).collect();
    let mut ib = vec![0, 0, 8, 3];
    for d in [n as u32, 28, 28] {
        ib.extend_from_slice(&d.to_be_bytes());
    }
    ib.extend_from_slice(&images);
    let mut lb = vec![0, 0, 8, 1];
    lb.extend_from_slice(&(n as u32).to_be_bytes());
    lb.extend_from_slice(&labels);
    for (name, bytes) in [("train-images-idx3-ubyte", &ib), ("train-labels-idx1-ubyte", &lb)] {
        if gz {
            let f = std::fs::File::create(dir.join(format!("{name}.gz"))).unwrap();
            let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::default());
            e.write_all(bytes).unwrap();
            e.finish().unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
    (images, labels)
}

/// A CIFAR-10 python batch as Python 2's cPickle (protocol 2) wrote it: a dict with byte-string keys, a list of
/// labels and a numpy uint8 array of shape [n, 3072] reconstructed through `numpy.core.multiarray._reconstruct`.
pub fn cifar_pickle(data: &[u8], labels: &[u8]) -> Vec<u8> {
    let n = labels.len();
    let mut p = vec![0x80, 2, b'}', b'q', 1, b'('];
    let short = |p: &mut Vec<u8>, s: &[u8]| {
        p.push(b'U');
        p.push(s.len() as u8);
        p.extend_from_slice(s);
    };
    short(&mut p, b"batch_label");
    short(&mut p, b"training batch 1 of 5");
    short(&mut p, b"labels");
    p.extend_from_slice(&[b']', b'q', 2, b'(']);
    for &l in labels {
        p.extend_from_slice(&[b'K', l]);
    }
    p.push(b'e');
    short(&mut p, b"data");
    p.extend_from_slice(b"cnumpy.core.multiarray\n_reconstruct\nq\x03cnumpy\nndarray\nq\x04K\x00\x85U\x01b\x87R(K\x01");
    p.push(b'M');
    p.extend_from_slice(&(n as u16).to_le_bytes());
    p.extend_from_slice(b"M\x00\x0c\x86cnumpy\ndtype\nq\x05U\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89");
    p.push(b'T');
    p.extend_from_slice(&(data.len() as u32).to_le_bytes());
    p.extend_from_slice(data);
    p.extend_from_slice(b"tb");
    short(&mut p, b"filenames");
    p.extend_from_slice(b"](");
    for i in 0..n {
        short(&mut p, format!("img_{i}.png").as_bytes());
    }
    p.extend_from_slice(b"eu.");
    p
}

/// `cifar-10-python.tar.gz` with `batches` training batches of `per` images each (and a test batch, ignored).
/// Returns all training images (CHW, 3072 bytes each) and labels in order.
pub fn make_cifar_tar(path: &Path, batches: usize, per: usize) -> (Vec<u8>, Vec<u8>) {
    let f = std::fs::File::create(path).unwrap();
    let mut t = tar::Builder::new(flate2::write::GzEncoder::new(f, flate2::Compression::fast()));
    let (mut all, mut all_labels) = (vec![], vec![]);
    let add = |t: &mut tar::Builder<_>, name: &str, data: &[u8], labels: &[u8]| {
        let bytes = cifar_pickle(data, labels);
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, format!("cifar-10-batches-py/{name}"), &bytes[..]).unwrap();
    };
    // Batches stored out of order in the archive: the reader must sort them.
    for b in (1..=batches).rev() {
        let data: Vec<u8> = (0..per * 3072).map(|i| ((i * 13 + b * 101 + i / 3072 * 17) % 256) as u8).collect();
        let labels: Vec<u8> = (0..per).map(|i| ((i + b) % 10) as u8).collect();
        add(&mut t, &format!("data_batch_{b}"), &data, &labels);
    }
    for b in 1..=batches {
        let data: Vec<u8> = (0..per * 3072).map(|i| ((i * 13 + b * 101 + i / 3072 * 17) % 256) as u8).collect();
        all.extend(data);
        all_labels.extend((0..per).map(|i| ((i + b) % 10) as u8));
    }
    add(&mut t, "test_batch", &vec![0u8; 3072], &[0]);
    t.into_inner().unwrap().finish().unwrap();
    (all, all_labels)
}

/// SHA-256 of every shard, in manifest order: equal datasets have equal lists.
pub fn shard_hashes(dir: &Path) -> Vec<(String, String)> {
    let m = sg2::data::Dataset::open(dir).unwrap().manifest;
    m.shards.iter().map(|s| (s.file.clone(), s.sha256.clone())).collect()
}

/// Runs sg2 with `args`: (success, stdout, stderr).
pub fn sg2(args: &[&str]) -> (bool, String, String) {
    super::run_sg2(args)
}
