//! `.npz` files as numpy's `savez` writes them: a zip archive of `.npy` files (format 1.0, little-endian, C order),
//! stored uncompressed. The official projector saves its result this way (`projected_w.npz`, key `w`).

use anyhow::{bail, ensure, Context, Result};
use std::io::{Read, Write};
use std::path::Path;
use tch::{Device, Kind, Tensor};

const MAGIC: &[u8] = b"\x93NUMPY";

/// A float32 tensor as `.npy` bytes.
fn npy_bytes(t: &Tensor) -> Vec<u8> {
    let t = t.detach().to_device(Device::Cpu).to_kind(Kind::Float).contiguous();
    let dims: Vec<String> = t.size().iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
    // numpy pads the header with spaces and a newline so that the data starts at a multiple of 64 bytes.
    let used = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - used % 64) % 64));
    header.push('\n');
    let mut out = MAGIC.to_vec();
    out.extend([1, 0]);
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    let values = Vec::<f32>::try_from(t.flatten(0, -1)).expect("float tensor");
    values.iter().for_each(|v| out.extend(v.to_le_bytes()));
    out
}

/// Writes `arrays` (float32) as an `.npz` atomically; each becomes `<name>.npy`.
pub fn write_npz(path: &Path, arrays: &[(&str, &Tensor)]) -> Result<()> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, t) in arrays {
        zip.start_file(format!("{name}.npy"), opts)?;
        zip.write_all(&npy_bytes(t))?;
    }
    let bytes = zip.finish().with_context(|| format!("{}: cannot build the archive", path.display()))?.into_inner();
    crate::util::write_bytes_atomic(path, &bytes)
}

/// The value of `key` in a `.npy` header dict: the text up to the next top-level comma.
fn header_field<'a>(header: &'a str, key: &str) -> Result<&'a str> {
    let at = header.find(&format!("'{key}'")).with_context(|| format!("no '{key}' in the .npy header"))?;
    let rest = header[at + key.len() + 2..].trim_start().strip_prefix(':').context("malformed .npy header")?.trim();
    let mut depth = 0;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth == 0 => return Ok(rest[..i].trim()),
            _ => {}
        }
    }
    bail!("malformed .npy header")
}

/// A `.npy` file of floats (f2, f4 or f8, either byte order, C or Fortran order) as a float32 tensor.
pub fn parse_npy(b: &[u8]) -> Result<Tensor> {
    ensure!(b.starts_with(MAGIC) && b.len() >= 10, "not a .npy file");
    let (len, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => {
            ensure!(b.len() >= 12, "truncated .npy header");
            (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
        }
        v => bail!(".npy format version {v} is not supported"),
    };
    let header = b.get(start..start + len).context("truncated .npy header")?;
    let header = std::str::from_utf8(header).context(".npy header is not text")?;
    let descr = header_field(header, "descr")?.trim_matches('\'');
    let fortran = match header_field(header, "fortran_order")? {
        "False" => false,
        "True" => true,
        other => bail!("bad .npy fortran_order {other}"),
    };
    let shape: Vec<i64> = header_field(header, "shape")?
        .trim_matches(|c| c == '(' || c == ')')
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().context("bad .npy shape"))
        .collect::<Result<_>>()?;
    // '<' little-endian, '>' big-endian, '=' native (little on the machines sg2 runs on).
    let (order, code) = descr.split_at(descr.len().min(1));
    let big = match order {
        "<" | "=" => false,
        ">" => true,
        _ => bail!("array of dtype {descr}, expected floats"),
    };
    let (kind, size) = match code {
        "f4" => (Kind::Float, 4),
        "f8" => (Kind::Double, 8),
        "f2" => (Kind::Half, 2),
        _ => bail!("array of dtype {descr}, expected floats (f2, f4 or f8)"),
    };
    let n = shape.iter().try_fold(1usize, |n, &d| usize::try_from(d).ok().and_then(|d| n.checked_mul(d)));
    let want = n.and_then(|n| n.checked_mul(size)).with_context(|| format!("bad .npy shape {shape:?}"))?;
    let data = &b[start + len..];
    ensure!(data.len() == want, ".npy data has {} bytes, shape {shape:?} needs {want}", data.len());
    let swapped: Vec<u8>;
    let data = if big {
        swapped = data.chunks_exact(size).flat_map(|c| c.iter().rev().copied()).collect();
        &swapped[..]
    } else {
        data
    };
    let t = if fortran {
        // Column-major: the reversed shape in row-major order, transposed back.
        let rev: Vec<i64> = shape.iter().rev().copied().collect();
        let dims: Vec<i64> = (0..shape.len() as i64).rev().collect();
        Tensor::from_data_size(data, &rev, kind).permute(&dims[..]).contiguous()
    } else {
        Tensor::from_data_size(data, &shape, kind)
    };
    Ok(t.to_kind(Kind::Float))
}

/// Array `key` of an `.npz` file, as float32.
pub fn read_npz(path: &Path, key: &str) -> Result<Tensor> {
    let inner = || -> Result<Tensor> {
        let f = std::fs::File::open(path).context("cannot open")?;
        let mut z = zip::ZipArchive::new(f).map_err(|e| anyhow::anyhow!("not an .npz file ({e})"))?;
        let names: Vec<String> = z.file_names().map(|n| n.trim_end_matches(".npy").to_string()).collect();
        let mut e =
            z.by_name(&format!("{key}.npy")).map_err(|_| anyhow::anyhow!("no array '{key}' (has {names:?})"))?;
        let mut b = vec![];
        e.read_to_end(&mut b)?;
        parse_npy(&b).with_context(|| format!("array '{key}'"))
    };
    inner().with_context(|| path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_numpys() {
        let t = Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.]).reshape([1, 2, 3]);
        let b = npy_bytes(&t);
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + hl]).unwrap();
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 3), }"), "{header}");
        assert!(header.ends_with(" \n"));
        let back = parse_npy(&b).unwrap();
        assert_eq!(back.size(), [1, 2, 3]);
        assert_eq!(Vec::<f32>::try_from(back.flatten(0, -1)).unwrap(), [1., 2., 3., 4., 5., 6.]);
        let one = npy_bytes(&Tensor::from_slice(&[7f32]));
        let hl = u16::from_le_bytes([one[8], one[9]]) as usize;
        assert!(std::str::from_utf8(&one[10..10 + hl]).unwrap().contains("'shape': (1,), }"));
    }

    /// A version-1 `.npy` file with `header` (padded as numpy pads it) and `data`.
    fn npy_with(header: &str, data: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(64) {
            h.push(' ');
        }
        h.push('\n');
        let mut b = b"\x93NUMPY\x01\x00".to_vec();
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b.extend_from_slice(data);
        b
    }

    /// Big-endian and Fortran-ordered arrays (numpy writes both, e.g. from MATLAB or another machine) read as the
    /// same values: a[i][j] = 10 i + j.
    #[test]
    fn byte_order_and_fortran_order_are_read() {
        let want = [0f32, 1., 2., 10., 11., 12.];
        let column_major = [0f64, 10., 1., 11., 2., 12.];
        let be: Vec<u8> = column_major.iter().flat_map(|v| v.to_be_bytes()).collect();
        let t = parse_npy(&npy_with("{'descr': '>f8', 'fortran_order': True, 'shape': (2, 3), }", &be)).unwrap();
        assert_eq!(t.size(), [2, 3]);
        assert_eq!(Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(), want);
        let le: Vec<u8> = want.iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = parse_npy(&npy_with("{'descr': '=f4', 'fortran_order': False, 'shape': (2, 3), }", &le)).unwrap();
        assert_eq!(Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(), want);
        let e = parse_npy(&npy_with("{'descr': '<i4', 'fortran_order': False, 'shape': (2, 3), }", &le)).unwrap_err();
        assert!(e.to_string().contains("dtype <i4, expected floats"), "{e}");
        let e = parse_npy(&npy_with("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 3), }", &le)).unwrap_err();
        assert!(e.to_string().contains("bad .npy shape"), "{e}");
    }

    #[test]
    fn npz_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.npz");
        let w = Tensor::from_slice(&[0.5f32, -1.0]).reshape([1, 1, 2]);
        write_npz(&p, &[("w", &w)]).unwrap();
        assert_eq!(read_npz(&p, "w").unwrap().size(), [1, 1, 2]);
        let e = format!("{:#}", read_npz(&p, "x").unwrap_err());
        assert!(e.contains("w.npz") && e.contains("no array 'x'"), "{e}");
        std::fs::write(&p, b"not a zip").unwrap();
        assert!(format!("{:#}", read_npz(&p, "w").unwrap_err()).contains("not an .npz file"));
    }
}
