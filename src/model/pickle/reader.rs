//! A pickle reader for network files. It turns the opcode stream (protocols 0-5, the opcodes Python 2 and 3 write)
//! into a value tree and interprets the few globals network pickles use (numpy arrays and dtypes, torch tensors and
//! storages, `OrderedDict`, sets, persistent modules, TF network states, `EasyDict`) as data. Any other global is
//! refused by name: nothing a file names is ever imported or run.

use super::globals::{build, global, new_object, reduce};
use super::value::{shared, Value};
use anyhow::{bail, ensure, Context, Result};
use std::collections::HashMap;
use std::rc::Rc;

/// Reads one pickle from `data`; returns the value and the offset just past its STOP.
/// `persistent_ids`: accept PERSID/BINPERSID (only legacy `torch.save` streams use them).
pub fn load(data: &[u8], persistent_ids: bool) -> Result<(Value, usize)> {
    let mut r = Reader { data, pos: 0, stack: vec![], marks: vec![], memo: HashMap::new(), persistent_ids };
    let v = r.run()?;
    Ok((v, r.pos))
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    persistent_ids: bool,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.with_context(|| format!("truncated pickle: {n} bytes wanted at byte {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn uint(&mut self, n: usize) -> Result<u64> {
        let b = self.take(n)?;
        Ok(b.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64))
    }

    fn len(&mut self, n: usize) -> Result<usize> {
        let v = self.uint(n)?;
        usize::try_from(v).context("pickle length out of range")
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').context("truncated pickle: unterminated line")?;
        self.pos += end + 1;
        std::str::from_utf8(&rest[..end]).context("pickle text argument is not UTF-8")
    }

    fn pop(&mut self) -> Result<Value> {
        if self.marks.last().is_some_and(|&m| m >= self.stack.len()) {
            bail!("malformed pickle: stack underflow at byte {}", self.pos);
        }
        self.stack.pop().with_context(|| format!("malformed pickle: stack underflow at byte {}", self.pos))
    }

    fn top(&mut self) -> Result<&mut Value> {
        let pos = self.pos;
        self.stack.last_mut().with_context(|| format!("malformed pickle: empty stack at byte {pos}"))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let m = self.marks.pop().with_context(|| format!("malformed pickle: no MARK before byte {}", self.pos))?;
        Ok(self.stack.split_off(m))
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn memo_get(&self, i: u32) -> Result<Value> {
        self.memo.get(&i).cloned().with_context(|| format!("malformed pickle: memo {i} unset at byte {}", self.pos))
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            let at = self.pos;
            let op = *self.take(1)?.first().unwrap_or(&0);
            match op {
                0x80 => {
                    let proto = self.uint(1)?;
                    ensure!(proto <= 5, "unsupported pickle protocol {proto}");
                }
                0x95 => {
                    self.take(8)?;
                }
                b'.' => return self.pop(),
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v);
                }
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'I' => {
                    let v = match self.line()? {
                        "01" => Value::Bool(true),
                        "00" => Value::Bool(false),
                        s => Value::Int(s.parse().with_context(|| format!("bad INT {s:?}"))?),
                    };
                    self.push(v);
                }
                b'L' => {
                    let s = self.line()?.trim_end_matches('L');
                    self.push(Value::Int(s.parse().with_context(|| format!("LONG {s:?} out of range"))?));
                }
                b'J' => {
                    let v = self.uint(4)? as u32 as i32;
                    self.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.uint(1)?;
                    self.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.uint(2)?;
                    self.push(Value::Int(v as i64));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { self.len(1)? } else { self.len(4)? };
                    let b = self.take(n)?;
                    self.push(long(b));
                }
                b'F' => {
                    let s = self.line()?;
                    self.push(Value::Float(s.parse().with_context(|| format!("bad FLOAT {s:?}"))?));
                }
                b'G' => {
                    let b: [u8; 8] = self.take(8)?.try_into().expect("8 bytes");
                    self.push(Value::Float(f64::from_be_bytes(b)));
                }
                // Python 2 str (BINSTRING, SHORT_BINSTRING), bytes, bytearray.
                b'T' | b'U' | b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'U' | b'C' => self.len(1)?,
                        b'T' | b'B' => self.len(4)?,
                        _ => self.len(8)?,
                    };
                    let b = self.take(n)?;
                    self.push(Value::Bytes(b.into()));
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        0x8c => self.len(1)?,
                        b'X' => self.len(4)?,
                        _ => self.len(8)?,
                    };
                    let b = self.take(n)?;
                    let s = std::str::from_utf8(b).with_context(|| format!("invalid UTF-8 in a str at byte {at}"))?;
                    self.push(Value::Str(s.into()));
                }
                b')' => self.push(Value::Tuple(Rc::from(vec![]))),
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items.into()));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    ensure!(self.stack.len() >= n, "malformed pickle: stack underflow at byte {at}");
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push(Value::Tuple(items.into()));
                }
                b']' => self.push(Value::List(shared(vec![]))),
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(shared(items)));
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend(vec![v], at)?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend(items, at)?;
                }
                b'}' => self.push(Value::Dict(shared(vec![]))),
                b'd' => {
                    let items = self.pop_mark()?;
                    let d = pairs(items, at)?;
                    self.push(Value::Dict(shared(d)));
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v], at)?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items, at)?;
                }
                0x8f => self.push(Value::Set(shared(vec![]))),
                0x90 => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::Set(s) => s.borrow_mut().extend(items),
                        other => bail!("malformed pickle: ADDITEMS on {} at byte {at}", other.kind()),
                    }
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Value::Set(shared(items)));
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.push(global(&module, &name)?);
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(m), Some(n)) = (module.as_str(), name.as_str()) else {
                        bail!("malformed pickle: STACK_GLOBAL without names at byte {at}");
                    };
                    self.push(global(m, n)?);
                }
                b'R' => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let args = args.items().with_context(|| format!("REDUCE arguments not a tuple at byte {at}"))?;
                    self.push(reduce(&f, args)?);
                }
                0x81 | 0x92 => {
                    if op == 0x92 {
                        self.pop()?; // keyword arguments: no known class takes any
                    }
                    let args = self.pop()?.items().unwrap_or_default();
                    let cls = self.pop()?;
                    self.push(new_object(&cls, args)?);
                }
                b'b' => {
                    let state = self.pop()?;
                    build(self.top()?, state, at)?;
                }
                b'p' => {
                    let i = self.line()?.parse().context("bad PUT index")?;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'q' | b'r' => {
                    let i = if op == b'q' { self.uint(1)? } else { self.uint(4)? } as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    let v = self.top()?.clone();
                    self.memo.insert(i, v);
                }
                b'g' => {
                    let i = self.line()?.parse().context("bad GET index")?;
                    let v = self.memo_get(i)?;
                    self.push(v);
                }
                b'h' | b'j' => {
                    let i = if op == b'h' { self.uint(1)? } else { self.uint(4)? } as u32;
                    let v = self.memo_get(i)?;
                    self.push(v);
                }
                b'P' | b'Q' if self.persistent_ids => {
                    let pid = if op == b'P' { Value::Str(self.line()?.into()) } else { self.pop()? };
                    self.push(Value::PersId(Rc::new(pid)));
                }
                b'P' | b'Q' => bail!("a persistent id at byte {at}: the file needs a custom loader"),
                other => bail!("unsupported pickle opcode 0x{other:02x} at byte {at}"),
            }
        }
    }

    fn extend(&mut self, items: Vec<Value>, at: usize) -> Result<()> {
        match self.top()? {
            Value::List(l) => l.borrow_mut().extend(items),
            other => bail!("malformed pickle: APPEND to {} at byte {at}", other.kind()),
        }
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>, at: usize) -> Result<()> {
        let items = pairs(items, at)?;
        match self.top()? {
            Value::Dict(d) => d.borrow_mut().extend(items),
            other => bail!("malformed pickle: SETITEM on {} at byte {at}", other.kind()),
        }
        Ok(())
    }
}

fn pairs(items: Vec<Value>, at: usize) -> Result<Vec<(Value, Value)>> {
    ensure!(items.len().is_multiple_of(2), "malformed pickle: odd number of dict items at byte {at}");
    let mut it = items.into_iter();
    let mut out = vec![];
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// LONG1/LONG4: little-endian two's complement.
fn long(b: &[u8]) -> Value {
    if b.len() <= 8 {
        let neg = b.last().is_some_and(|&x| x & 0x80 != 0);
        let mut v: u64 = if neg { u64::MAX } else { 0 };
        for (i, &x) in b.iter().enumerate() {
            v &= !(0xffu64 << (8 * i));
            v |= (x as u64) << (8 * i);
        }
        Value::Int(v as i64)
    } else {
        Value::BigInt(b.into())
    }
}

#[cfg(test)]
mod tests {
    use super::super::globals::as_array;
    use super::*;

    fn read(b: &[u8]) -> Value {
        let (v, end) = load(b, false).unwrap();
        assert_eq!(end, b.len());
        v
    }

    /// Containers nested 200,000 deep (tuples, lists, dicts) are read and dropped without overflowing the stack.
    #[test]
    fn deep_nesting_is_dropped_without_recursion() {
        let n = 200_000;
        let tuples = [&b"\x80\x02N"[..], &vec![0x85u8; n], b"."].concat();
        let lists = [&b"\x80\x02"[..], &vec![b'('; n], b"N", &vec![b'l'; n], b"."].concat();
        let dicts = [&b"\x80\x02"[..], &b"(X\x01\x00\x00\x00a".repeat(n), b"N", &vec![b'd'; n], b"."].concat();
        for data in [tuples, lists, dicts] {
            let mut v = read(&data);
            let mut depth = 0;
            while let Some(inner) = v.items().map(|t| t[0].clone()).or_else(|| v.get("a")) {
                v = inner;
                depth += 1;
            }
            assert_eq!(depth, n);
        }
    }

    #[test]
    fn python2_opcodes() {
        // (dict(a=1, b=[2.5, 'x']), 2**70, -3) as Python 2 writes it: str keys as SHORT_BINSTRING, BINPUT/BINGET.
        let mut b =
            b"\x80\x02}q\x00(U\x01aq\x01K\x01U\x01b]q\x02(G@\x04\x00\x00\x00\x00\x00\x00T\x01\x00\x00\x00xeu".to_vec();
        b.extend(b"\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40J\xfd\xff\xff\xff\x87.");
        let v = read(&b);
        let t = v.items().unwrap();
        assert_eq!(t[0].get("a").and_then(|x| x.as_int()), Some(1));
        let list = t[0].get("b").unwrap().items().unwrap();
        assert!(matches!(list[0], Value::Float(f) if f == 2.5));
        assert_eq!(list[1].as_str(), Some("x"));
        assert!(matches!(&t[1], Value::BigInt(b) if b.len() == 9 && b[8] == 0x40));
        assert_eq!(t[2].as_int(), Some(-3));
        assert_eq!(t[0].keys(), ["'a'", "'b'"]);
    }

    #[test]
    fn memo_shares_containers_filled_later() {
        // d = {}; (d, d) with d filled after it was memoized: both entries see the items.
        let b = b"\x80\x04}\x94h\x00\x86\x94h\x00(\x8c\x01k\x94K\x07u0.";
        let v = read(b);
        let t = v.items().unwrap();
        assert_eq!(t[0].get("k").and_then(|x| x.as_int()), Some(7));
        assert_eq!(t[1].get("k").and_then(|x| x.as_int()), Some(7));
    }

    #[test]
    fn protocol0_numbers_and_long_binget() {
        let v = read(b"(I01\nI-12\nL99L\nF0.5\nNp7\n0j\x07\x00\x00\x00t.");
        let t = v.items().unwrap();
        assert!(matches!(t[0], Value::Bool(true)));
        assert_eq!(t[1].as_int(), Some(-12));
        assert_eq!(t[2].as_int(), Some(99));
        assert!(matches!(t[3], Value::Float(f) if f == 0.5));
        assert!(matches!(t[4], Value::None));
    }

    #[test]
    fn numpy_array_big_endian_fortran_order() {
        // _reconstruct(ndarray, (0,), 'b') + __setstate__((1, (2, 3), dtype('f4') with '>', True, data)).
        let mut b = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85U\x01b\x87R(K\x01K\x02K\x03\x86"
            .to_vec();
        b.extend(b"cnumpy\ndtype\nU\x02f4K\x00K\x01\x87R(K\x03U\x01>NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x88T\x18\x00\x00\x00");
        for x in [1f32, 4., 2., 5., 3., 6.] {
            b.extend(x.to_be_bytes());
        }
        b.extend(b"tb.");
        let a = as_array(&read(&b)).unwrap();
        assert_eq!(a.shape, [2, 3]);
        let t = a.to_tensor();
        assert_eq!(Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(), [1., 2., 3., 4., 5., 6.]);
    }

    #[test]
    fn malformed_streams_are_errors_not_panics() {
        for b in [
            &b""[..],
            b"\x80\x02",
            b"\x80\x02t.",
            b"\x80\x02h\x05.",
            b"\x80\x02K\x01K\x02s.",
            b"\x80\x09N.",
            b"\x80\x02Q.",
        ] {
            assert!(load(b, false).is_err(), "{b:?}");
        }
        let e = load(b"\x80\x02cbuiltins\neval\n.", false).unwrap_err().to_string();
        assert_eq!(e, "unsupported pickle global 'builtins.eval' (only network data is read)");
    }
}
