//! The value tree a pickle is read into.

use super::array::{Array, Elem};
use super::globals::Global;
use std::cell::RefCell;
use std::rc::Rc;

pub type Shared<T> = Rc<RefCell<T>>;

pub fn shared<T>(v: T) -> Shared<T> {
    Rc::new(RefCell::new(v))
}

/// An instance whose state arrives after its creation (`BUILD`): a TF network, a persistent module, a numpy array
/// or dtype being reconstructed.
#[derive(Debug)]
pub struct Object {
    pub class: Global,
    pub args: Vec<Value>,
    pub state: Value,
}

/// A legacy `torch.save` storage.
#[derive(Debug)]
pub struct Storage {
    pub elem: Elem,
    pub data: Rc<[u8]>,
}

#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits: little-endian two's complement bytes.
    BigInt(Rc<[u8]>),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<[Value]>),
    List(Shared<Vec<Value>>),
    Dict(Shared<Vec<(Value, Value)>>),
    Set(Shared<Vec<Value>>),
    Global(Global),
    Object(Shared<Object>),
    Array(Rc<Array>),
    Storage(Rc<Storage>),
    /// A persistent id (only `torch.save` streams have them).
    PersId(Rc<Value>),
}

/// Dropped with a work list rather than recursion: a pickle can nest containers hundreds of thousands deep, and
/// the compiler's recursive drop would overflow the stack.
impl Drop for Value {
    fn drop(&mut self) {
        let mut pending = vec![];
        take_children(self, &mut pending);
        while let Some(mut v) = pending.pop() {
            take_children(&mut v, &mut pending);
        }
    }
}

/// Moves the children of `v` that only it holds into `out`.
fn take_children(v: &mut Value, out: &mut Vec<Value>) {
    let take = |x: &mut Value| std::mem::replace(x, Value::None);
    match v {
        Value::Tuple(items) => {
            if let Some(items) = Rc::get_mut(items) {
                out.extend(items.iter_mut().map(take));
            }
        }
        Value::List(items) | Value::Set(items) if Rc::strong_count(items) == 1 => {
            out.append(&mut items.borrow_mut());
        }
        Value::Dict(items) if Rc::strong_count(items) == 1 => {
            for (k, x) in items.borrow_mut().drain(..) {
                out.push(k);
                out.push(x);
            }
        }
        Value::Object(o) if Rc::strong_count(o) == 1 => {
            let mut o = o.borrow_mut();
            out.append(&mut o.args);
            out.push(take(&mut o.state));
        }
        Value::PersId(x) => {
            if let Some(x) = Rc::get_mut(x) {
                out.push(take(x));
            }
        }
        _ => {}
    }
}

impl Value {
    /// The text of a str, or of a Python 2 str (bytes) that is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// The items of a tuple, list or set.
    pub fn items(&self) -> Option<Vec<Value>> {
        match self {
            Value::Tuple(t) => Some(t.to_vec()),
            Value::List(l) | Value::Set(l) => Some(l.borrow().clone()),
            _ => None,
        }
    }

    /// `dict[key]` for a dict with str keys.
    pub fn get(&self, key: &str) -> Option<Value> {
        match self {
            Value::Dict(d) => d.borrow().iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v.clone()),
            _ => None,
        }
    }

    /// Keys of a dict, as text (for messages).
    pub fn keys(&self) -> Vec<String> {
        match self {
            Value::Dict(d) => d.borrow().iter().map(|(k, _)| k.as_str().map_or_else(|| k.kind(), quote)).collect(),
            _ => vec![],
        }
    }

    /// The class of an object with state.
    pub fn object_class(&self) -> Option<Global> {
        match self {
            Value::Object(o) => Some(o.borrow().class),
            _ => None,
        }
    }

    /// What the value is, in a few words ("a dict", "a numpy array", ...).
    pub fn kind(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(_) => "a bool".into(),
            Value::Int(_) | Value::BigInt(_) => "an int".into(),
            Value::Float(_) => "a float".into(),
            Value::Str(_) => "a str".into(),
            Value::Bytes(_) => "bytes".into(),
            Value::Tuple(t) => format!("a tuple of {} values", t.len()),
            Value::List(l) => format!("a list of {} values", l.borrow().len()),
            Value::Dict(_) => "a dict".into(),
            Value::Set(_) => "a set".into(),
            Value::Global(g) => format!("the global {g:?}"),
            Value::Object(o) => match o.borrow().class {
                Global::Network => "a TF network".into(),
                Global::Persistent => "a persistent module".into(),
                Global::NdReconstruct => "a numpy array".into(),
                c => format!("a {c:?} object"),
            },
            Value::Array(a) => format!("an array of shape {:?}", a.shape),
            Value::Storage(_) => "a torch storage".into(),
            Value::PersId(_) => "a persistent id".into(),
        }
    }

    /// `kind()`, with a dict's keys: the one line that says what a file holds.
    pub fn describe(&self) -> String {
        match self {
            Value::Dict(_) => {
                let mut keys = self.keys();
                let n = keys.len();
                keys.truncate(12);
                let more = if n > 12 { format!(", ... ({n} keys)") } else { String::new() };
                format!("a dict with keys [{}{more}]", keys.join(", "))
            }
            Value::Tuple(t) => {
                let kinds: Vec<String> = t.iter().take(6).map(Value::kind).collect();
                format!("a tuple of {} values ({})", t.len(), kinds.join(", "))
            }
            other => other.kind(),
        }
    }
}

fn quote(s: &str) -> String {
    format!("'{s}'")
}
