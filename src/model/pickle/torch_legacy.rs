//! The legacy `torch.save` format inside `torch.storage._load_from_bytes(...)`, which is how torch pickles a tensor's
//! storage: five consecutive pickles (magic number, protocol version 1001, system info, the object with persistent
//! ids `('storage', torch.<Type>Storage, key, location, numel[, view])`, the list of storage keys), then for each key
//! its element count (int64, little-endian) and its raw bytes.

use super::globals::Global;
use super::reader::load;
use super::value::{Storage, Value};
use anyhow::{bail, ensure, Context, Result};

/// 0x1950a86a20f9469cfc6c, little-endian, as LONG1 stores it.
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const PROTOCOL: i64 = 1001;

pub fn load_storage(bytes: &[u8]) -> Result<Storage> {
    let inner = || -> Result<Storage> {
        let mut pos = 0;
        let next = |pos: &mut usize| -> Result<Value> {
            let (v, used) = load(&bytes[*pos..], true)?;
            *pos += used;
            Ok(v)
        };
        match next(&mut pos)? {
            Value::BigInt(ref b) if **b == MAGIC => {}
            _ => bail!("bad magic number"),
        }
        let proto = next(&mut pos)?.as_int();
        ensure!(proto == Some(PROTOCOL), "protocol version {proto:?}, expected {PROTOCOL}");
        let info = next(&mut pos)?;
        ensure!(!matches!(info.get("little_endian"), Some(Value::Bool(false))), "saved on a big-endian machine");
        let Value::PersId(ref pid) = next(&mut pos)? else { bail!("the saved object is not a storage") };
        let pid = pid.items().context("storage id is not a tuple")?;
        ensure!(pid.len() >= 5 && pid[0].as_str() == Some("storage"), "storage id is not ('storage', ...)");
        let elem = match pid[1] {
            Value::Global(Global::StorageClass(e)) => e,
            ref other => bail!("storage type is {}", other.kind()),
        };
        let key = pid[2].as_str().context("storage key")?.to_string();
        let view = pid.get(5).cloned().unwrap_or(Value::None);
        let keys = next(&mut pos)?.items().context("storage key list")?;
        ensure!(keys.len() == 1 && keys[0].as_str() == Some(&key), "expected one storage, {key}");
        let head = bytes.get(pos..pos + 8).context("truncated storage size")?;
        let n = u64::from_le_bytes(head.try_into()?) as usize;
        pos += 8;
        let len = n.checked_mul(elem.size()).context("storage size overflows")?;
        let data = bytes.get(pos..pos.saturating_add(len)).context("truncated storage data")?;
        let (start, count) = match view.items() {
            // (view key, offset, size): a slice of the storage (torch before 1.0).
            Some(v) if v.len() == 3 => (v[1].as_int().unwrap_or(0) as usize, v[2].as_int().unwrap_or(0) as usize),
            _ => (0, n),
        };
        ensure!(start.saturating_add(count) <= n, "storage view out of range");
        let s = elem.size();
        Ok(Storage { elem, data: data[start * s..(start + count) * s].into() })
    };
    inner().context("a torch storage in legacy torch.save format")
}

#[cfg(test)]
mod tests {
    use super::super::array::Elem;
    use super::*;

    /// The stream torch writes for a FloatStorage of [1.0, -2.0].
    pub fn float_storage(values: &[f32]) -> Vec<u8> {
        let mut b = vec![0x80, 2, 0x8a, 10];
        b.extend(MAGIC);
        b.extend(b".\x80\x02M\xe9\x03.\x80\x02}X\r\x00\x00\x00little_endian\x88s.");
        b.extend(b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00kX\x03\x00\x00\x00cpu");
        b.extend([b'K', values.len() as u8]);
        b.extend(b"NtQ.\x80\x02]X\x01\x00\x00\x00ka.");
        b.extend((values.len() as u64).to_le_bytes());
        values.iter().for_each(|v| b.extend(v.to_le_bytes()));
        b
    }

    #[test]
    fn reads_a_float_storage() {
        let s = load_storage(&float_storage(&[1.0, -2.0])).unwrap();
        assert_eq!(s.elem, Elem::F32);
        assert_eq!(&s.data[..], [1.0f32.to_le_bytes(), (-2.0f32).to_le_bytes()].concat());
        let mut bad = float_storage(&[1.0]);
        bad.truncate(bad.len() - 2);
        assert!(load_storage(&bad).is_err());
    }
}
