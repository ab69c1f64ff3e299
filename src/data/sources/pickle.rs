//! A minimal Python pickle reader (protocols 0-4, the opcodes plain containers and numpy arrays use), enough to read
//! the CIFAR-10 python batches without Python. Objects are kept as (callable, args, state) and interpreted by the
//! caller; nothing is executed.

use anyhow::{bail, ensure, Context, Result};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub enum Val {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Val>),
    Tuple(Vec<Val>),
    Dict(Vec<(Val, Val)>),
    Global(String, String),
    Obj { func: Box<Val>, args: Box<Val>, state: Option<Box<Val>> },
    Mark,
}

impl Val {
    /// Looks up a dict entry by a str or bytes key.
    pub fn get(&self, key: &str) -> Option<&Val> {
        match self {
            Val::Dict(items) => items.iter().find(|(k, _)| match k {
                Val::Str(s) => s == key,
                Val::Bytes(b) => b == key.as_bytes(),
                _ => false,
            }),
            _ => None,
        }
        .map(|(_, v)| v)
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(*i),
            Val::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        ensure!(self.pos + n <= self.b.len(), "pickle truncated at byte {}", self.pos);
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<String> {
        let rest = &self.b[self.pos..];
        let n = rest.iter().position(|&c| c == b'\n').context("pickle: unterminated line")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
}

fn pop_mark(stack: &mut Vec<Val>) -> Result<Vec<Val>> {
    let m = stack.iter().rposition(|v| matches!(v, Val::Mark)).context("pickle: no MARK")?;
    let items = stack.split_off(m + 1);
    stack.pop();
    Ok(items)
}

fn latin1(s: &str) -> Vec<u8> {
    s.chars().map(|c| c as u32 as u8).collect()
}

/// Parses one pickle and returns its value.
pub fn load(bytes: &[u8]) -> Result<Val> {
    let mut r = Reader { b: bytes, pos: 0 };
    let mut stack: Vec<Val> = vec![];
    let mut memo: HashMap<u32, Val> = HashMap::new();
    let pop = |stack: &mut Vec<Val>| stack.pop().context("pickle: stack underflow");
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?;
            }
            0x95 => {
                r.u64()?;
            }
            b'.' => return pop(&mut stack),
            b'(' => stack.push(Val::Mark),
            b'}' => stack.push(Val::Dict(vec![])),
            b']' => stack.push(Val::List(vec![])),
            b')' => stack.push(Val::Tuple(vec![])),
            b'N' => stack.push(Val::None),
            0x88 => stack.push(Val::Bool(true)),
            0x89 => stack.push(Val::Bool(false)),
            b'K' => stack.push(Val::Int(r.u8()? as i64)),
            b'M' => stack.push(Val::Int(r.u16()? as i64)),
            b'J' => stack.push(Val::Int(r.u32()? as i32 as i64)),
            0x8a => {
                let n = r.u8()? as usize;
                ensure!(n <= 8, "pickle: integer too long");
                let b = r.take(n)?;
                let mut v: i64 = 0;
                for (i, &x) in b.iter().enumerate() {
                    v |= (x as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Val::Int(v));
            }
            b'I' => {
                let l = r.line()?;
                stack.push(match l.as_str() {
                    "01" => Val::Bool(true),
                    "00" => Val::Bool(false),
                    s => Val::Int(s.parse().with_context(|| format!("pickle: bad INT {s:?}"))?),
                });
            }
            b'G' => stack.push(Val::Float(f64::from_be_bytes(r.take(8)?.try_into().unwrap()))),
            b'U' => {
                let n = r.u8()? as usize;
                stack.push(Val::Bytes(r.take(n)?.to_vec()));
            }
            b'T' => {
                let n = r.u32()? as usize;
                stack.push(Val::Bytes(r.take(n)?.to_vec()));
            }
            b'C' => {
                let n = r.u8()? as usize;
                stack.push(Val::Bytes(r.take(n)?.to_vec()));
            }
            b'B' => {
                let n = r.u32()? as usize;
                stack.push(Val::Bytes(r.take(n)?.to_vec()));
            }
            0x8e => {
                let n = r.u64()? as usize;
                stack.push(Val::Bytes(r.take(n)?.to_vec()));
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Val::Str(String::from_utf8_lossy(r.take(n)?).into_owned()));
            }
            b'X' => {
                let n = r.u32()? as usize;
                stack.push(Val::Str(String::from_utf8_lossy(r.take(n)?).into_owned()));
            }
            0x8d => {
                let n = r.u64()? as usize;
                stack.push(Val::Str(String::from_utf8_lossy(r.take(n)?).into_owned()));
            }
            b'q' => {
                let k = r.u8()? as u32;
                memo.insert(k, stack.last().context("pickle: empty stack")?.clone());
            }
            b'r' => {
                let k = r.u32()?;
                memo.insert(k, stack.last().context("pickle: empty stack")?.clone());
            }
            0x94 => {
                let k = memo.len() as u32;
                memo.insert(k, stack.last().context("pickle: empty stack")?.clone());
            }
            b'h' => {
                let k = r.u8()? as u32;
                stack.push(memo.get(&k).context("pickle: bad memo reference")?.clone());
            }
            b'j' => {
                let k = r.u32()?;
                stack.push(memo.get(&k).context("pickle: bad memo reference")?.clone());
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(Val::Global(module, name));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Val::Str(m), Val::Str(n)) => stack.push(Val::Global(m, n)),
                    _ => bail!("pickle: STACK_GLOBAL needs two strings"),
                }
            }
            0x85 => {
                let a = pop(&mut stack)?;
                stack.push(Val::Tuple(vec![a]));
            }
            0x86 => {
                let b = pop(&mut stack)?;
                let a = pop(&mut stack)?;
                stack.push(Val::Tuple(vec![a, b]));
            }
            0x87 => {
                let c = pop(&mut stack)?;
                let b = pop(&mut stack)?;
                let a = pop(&mut stack)?;
                stack.push(Val::Tuple(vec![a, b, c]));
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Val::Tuple(items));
            }
            b'l' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Val::List(items));
            }
            b'd' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Val::Dict(
                    items.chunks(2).map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or(Val::None))).collect(),
                ));
            }
            b'R' | 0x81 => {
                let args = pop(&mut stack)?;
                let func = pop(&mut stack)?;
                // Python 3 pickles bytes at protocol 2 as _codecs.encode(latin-1 str, 'latin1').
                if func == Val::Global("_codecs".into(), "encode".into()) {
                    if let Val::Tuple(a) = &args {
                        if let Some(Val::Str(s)) = a.first() {
                            stack.push(Val::Bytes(latin1(s)));
                            continue;
                        }
                    }
                }
                stack.push(Val::Obj { func: Box::new(func), args: Box::new(args), state: None });
            }
            b'b' => {
                let st = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Val::Obj { state, .. }) => *state = Some(Box::new(st)),
                    _ => bail!("pickle: BUILD on a non-object"),
                }
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Val::Dict(d)) => d.push((k, v)),
                    _ => bail!("pickle: SETITEM on a non-dict"),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Val::Dict(d)) => {
                        d.extend(items.chunks(2).map(|c| (c[0].clone(), c.get(1).cloned().unwrap_or(Val::None))))
                    }
                    _ => bail!("pickle: SETITEMS on a non-dict"),
                }
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Val::List(l)) => l.push(v),
                    _ => bail!("pickle: APPEND on a non-list"),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Val::List(l)) => l.extend(items),
                    _ => bail!("pickle: APPENDS on a non-list"),
                }
            }
            op => bail!("pickle: unsupported opcode {op:#04x} at byte {}", r.pos - 1),
        }
    }
}

/// The shape and raw bytes of a pickled C-contiguous uint8 numpy array.
pub fn ndarray_u8(v: &Val) -> Result<(Vec<usize>, &[u8])> {
    let Val::Obj { state: Some(state), .. } = v else { bail!("not a numpy array") };
    let Val::Tuple(st) = state.as_ref() else { bail!("numpy array state is not a tuple") };
    ensure!(st.len() == 5, "numpy array state has {} fields, expected 5", st.len());
    let Val::Tuple(shape) = &st[1] else { bail!("numpy array shape is not a tuple") };
    let shape: Vec<usize> =
        shape.iter().map(|d| d.as_int().map(|x| x as usize).context("bad dimension")).collect::<Result<_>>()?;
    ensure!(st[3] != Val::Bool(true), "Fortran-ordered numpy arrays are not supported");
    let data = match &st[4] {
        Val::Bytes(b) => b.as_slice(),
        _ => bail!("numpy array data is not raw bytes"),
    };
    ensure!(
        data.len() == shape.iter().product::<usize>(),
        "numpy array holds {} bytes for shape {shape:?} (not uint8?)",
        data.len()
    );
    Ok((shape, data))
}
