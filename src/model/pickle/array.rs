//! Arrays read from pickles (numpy arrays and scalars, torch tensors): element type, shape and little-endian data
//! in C order.

use anyhow::{bail, ensure, Context, Result};
use std::rc::Rc;
use tch::{Kind, Tensor};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Elem {
    Bool,
    U8,
    I8,
    I16,
    I32,
    I64,
    F16,
    BF16,
    F32,
    F64,
}

impl Elem {
    pub fn size(self) -> usize {
        match self {
            Elem::Bool | Elem::U8 | Elem::I8 => 1,
            Elem::I16 | Elem::F16 | Elem::BF16 => 2,
            Elem::I32 | Elem::F32 => 4,
            Elem::I64 | Elem::F64 => 8,
        }
    }

    /// A numpy type code without byte order: "f4", "float32", "?", "u1", ...
    pub fn from_numpy(code: &str) -> Option<Elem> {
        Some(match code {
            "b1" | "?" | "bool" => Elem::Bool,
            "u1" | "B" | "uint8" => Elem::U8,
            "i1" | "b" | "int8" => Elem::I8,
            "i2" | "h" | "int16" => Elem::I16,
            "i4" | "i" | "int32" => Elem::I32,
            "i8" | "l" | "q" | "int64" => Elem::I64,
            "f2" | "e" | "float16" => Elem::F16,
            "f4" | "f" | "float32" => Elem::F32,
            "f8" | "d" | "float64" => Elem::F64,
            _ => return None,
        })
    }

    /// A torch storage class name: "FloatStorage", ...
    pub fn from_storage(name: &str) -> Option<Elem> {
        Some(match name {
            "BoolStorage" => Elem::Bool,
            "ByteStorage" => Elem::U8,
            "CharStorage" => Elem::I8,
            "ShortStorage" => Elem::I16,
            "IntStorage" => Elem::I32,
            "LongStorage" => Elem::I64,
            "HalfStorage" => Elem::F16,
            "BFloat16Storage" => Elem::BF16,
            "FloatStorage" => Elem::F32,
            "DoubleStorage" => Elem::F64,
            _ => return None,
        })
    }

    fn kind(self) -> Kind {
        match self {
            Elem::Bool => Kind::Bool,
            Elem::U8 => Kind::Uint8,
            Elem::I8 => Kind::Int8,
            Elem::I16 => Kind::Int16,
            Elem::I32 => Kind::Int,
            Elem::I64 => Kind::Int64,
            Elem::F16 => Kind::Half,
            Elem::BF16 => Kind::BFloat16,
            Elem::F32 => Kind::Float,
            Elem::F64 => Kind::Double,
        }
    }
}

#[derive(Debug)]
pub struct Array {
    pub elem: Elem,
    pub shape: Vec<usize>,
    /// Exactly numel x element size bytes, little-endian, C order.
    pub data: Rc<[u8]>,
}

/// The number of elements of `shape`, or an error when it overflows.
pub fn numel(shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).context("array shape overflows")
}

impl Array {
    /// Checks the data size; byte-swaps big-endian data.
    pub fn new(elem: Elem, shape: Vec<usize>, data: impl Into<Rc<[u8]>>, big_endian: bool) -> Result<Array> {
        let mut data: Rc<[u8]> = data.into();
        let want = numel(&shape)?.checked_mul(elem.size()).context("array size overflows")?;
        ensure!(data.len() == want, "array of shape {shape:?} has {} bytes of data, expected {want}", data.len());
        if big_endian {
            let mut v = data.to_vec();
            v.chunks_mut(elem.size()).for_each(|c| c.reverse());
            data = v.into();
        }
        Ok(Array { elem, shape, data })
    }

    /// A CPU tensor with the same element type and shape.
    pub fn to_tensor(&self) -> Tensor {
        let shape: Vec<i64> = self.shape.iter().map(|&d| d as i64).collect();
        Tensor::from_data_size(&self.data, &shape, self.elem.kind())
    }

    /// The single value of a one-element array, as f64.
    pub fn scalar(&self) -> Result<f64> {
        ensure!(self.data.len() == self.elem.size(), "expected one value, found shape {:?}", self.shape);
        let b = &self.data;
        Ok(match self.elem {
            Elem::F32 => f32::from_le_bytes(b[..4].try_into()?) as f64,
            Elem::F64 => f64::from_le_bytes(b[..8].try_into()?),
            Elem::I32 => i32::from_le_bytes(b[..4].try_into()?) as f64,
            Elem::I64 => i64::from_le_bytes(b[..8].try_into()?) as f64,
            Elem::U8 | Elem::Bool => b[0] as f64,
            Elem::I8 => b[0] as i8 as f64,
            other => bail!("{other:?} scalars are not read"),
        })
    }
}

/// Copies the strided view (`offset`, `size`, `stride`, in elements) of `src` into C order, checking bounds.
pub fn gather(src: &[u8], elem_size: usize, offset: usize, size: &[usize], stride: &[usize]) -> Result<Vec<u8>> {
    ensure!(size.len() == stride.len(), "tensor has {} sizes but {} strides", size.len(), stride.len());
    let n = numel(size)?;
    let total = src.len() / elem_size;
    if n == 0 {
        return Ok(vec![]);
    }
    let last = size.iter().zip(stride).try_fold(offset, |acc, (&d, &s)| acc.checked_add((d - 1).checked_mul(s)?));
    ensure!(last.is_some_and(|l| l < total), "tensor view reaches past its storage of {total} elements");
    // The contiguous case is one copy.
    let mut expect = 1;
    let contiguous = size.iter().zip(stride).rev().all(|(&d, &s)| {
        let ok = d == 1 || s == expect;
        expect *= d;
        ok
    });
    if contiguous {
        return Ok(src[offset * elem_size..(offset + n) * elem_size].to_vec());
    }
    let mut out = Vec::with_capacity(n * elem_size);
    let mut idx = vec![0usize; size.len()];
    for _ in 0..n {
        let at = offset + idx.iter().zip(stride).map(|(i, s)| i * s).sum::<usize>();
        out.extend_from_slice(&src[at * elem_size..(at + 1) * elem_size]);
        for d in (0..size.len()).rev() {
            idx[d] += 1;
            if idx[d] < size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_follows_strides() {
        // A 2x3 matrix stored transposed (strides 1, 2), offset 1 in a storage of 7 bytes.
        let src: Vec<u8> = (0..7).collect();
        let out = gather(&src, 1, 1, &[2, 3], &[1, 2]).unwrap();
        assert_eq!(out, [1, 3, 5, 2, 4, 6]);
        assert_eq!(gather(&src, 1, 2, &[5], &[1]).unwrap(), [2, 3, 4, 5, 6]);
        assert!(gather(&src, 1, 3, &[5], &[1]).is_err());
    }

    #[test]
    fn big_endian_data_is_swapped() {
        let a = Array::new(Elem::F32, vec![], 1.5f32.to_be_bytes().to_vec(), true).unwrap();
        assert_eq!(a.scalar().unwrap(), 1.5);
        assert!(Array::new(Elem::F32, vec![2], vec![0u8; 4], false).is_err());
    }
}
