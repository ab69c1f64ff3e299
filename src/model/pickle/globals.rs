//! The globals a network pickle may name, interpreted as data: `REDUCE`, `NEWOBJ` and `BUILD` on them build numpy
//! arrays, torch tensors and storages, dicts, sets and objects with state. Nothing is imported or run.

use super::array::{gather, Array, Elem};
use super::value::{shared, Object, Value};
use anyhow::{bail, ensure, Context, Result};
use std::rc::Rc;

/// The globals a network pickle may name. Each is data to this reader, never code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    NdReconstruct,
    NdArrayClass,
    Dtype,
    Scalar,
    FromBuffer,
    OrderedDict,
    Set,
    Bytearray,
    ObjectClass,
    CodecsEncode,
    Reconstructor,
    RebuildTensor,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    RebuildFromTypeV2,
    TensorClass,
    LoadFromBytes,
    StorageClass(Elem),
    Persistent,
    Network,
    EasyDict,
}

fn lookup_global(module: &str, name: &str) -> Option<Global> {
    use Global::*;
    let numpy_core = |m: &str| m == "numpy.core" || m == "numpy._core";
    let g = match (module, name) {
        (m, "_reconstruct") if m.strip_suffix(".multiarray").is_some_and(numpy_core) => NdReconstruct,
        (m, "scalar") if m.strip_suffix(".multiarray").is_some_and(numpy_core) => Scalar,
        (m, "_frombuffer") if m.strip_suffix(".numeric").is_some_and(numpy_core) => FromBuffer,
        ("numpy", "ndarray") => NdArrayClass,
        ("numpy", "dtype") => Dtype,
        ("collections", "OrderedDict") => OrderedDict,
        ("builtins" | "__builtin__", "set" | "frozenset") => Set,
        ("builtins" | "__builtin__", "bytearray") => Bytearray,
        ("builtins" | "__builtin__", "object") => ObjectClass,
        ("_codecs", "encode") => CodecsEncode,
        ("copyreg" | "copy_reg", "_reconstructor") => Reconstructor,
        ("torch._utils", "_rebuild_tensor") => RebuildTensor,
        ("torch._utils", "_rebuild_tensor_v2") => RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => RebuildParameterWithState,
        ("torch._tensor", "_rebuild_from_type_v2") => RebuildFromTypeV2,
        ("torch", "Tensor") | ("torch.nn.parameter", "Parameter") => TensorClass,
        ("torch.storage", "_load_from_bytes") => LoadFromBytes,
        ("torch", s) if s.ends_with("Storage") => StorageClass(Elem::from_storage(s)?),
        ("torch_utils.persistence", "_reconstruct_persistent_obj") => Persistent,
        ("dnnlib.tflib.network", "Network") => Network,
        ("dnnlib.util" | "dnnlib", "EasyDict") => EasyDict,
        _ => return None,
    };
    Some(g)
}

pub fn global(module: &str, name: &str) -> Result<Value> {
    match lookup_global(module, name) {
        Some(g) => Ok(Value::Global(g)),
        None => bail!("unsupported pickle global '{module}.{name}' (only network data is read)"),
    }
}

fn obj(class: Global, args: Vec<Value>) -> Value {
    Value::Object(shared(Object { class, args, state: Value::None }))
}

/// `f(*args)` for the known callables.
pub fn reduce(f: &Value, args: Vec<Value>) -> Result<Value> {
    let Value::Global(g) = f else { bail!("malformed pickle: REDUCE calls {}", f.kind()) };
    let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::None);
    Ok(match g {
        Global::NdReconstruct | Global::Dtype => obj(*g, args),
        Global::Scalar => {
            let dtype = dtype(&arg(0))?;
            let data = match arg(1) {
                Value::Bytes(ref b) => b.clone(),
                other => bail!("numpy scalar with {} as data", other.kind()),
            };
            Value::Array(Rc::new(Array::new(dtype.0, vec![], data, dtype.1)?))
        }
        Global::FromBuffer => {
            let Value::Bytes(ref b) = arg(0) else { bail!("numpy _frombuffer without a buffer") };
            let (elem, big) = dtype(&arg(1))?;
            let shape = dims(&arg(2))?;
            let fortran = arg(3).as_str() == Some("F");
            Value::Array(Rc::new(array_from(elem, shape, b.clone(), big, fortran)?))
        }
        Global::OrderedDict => {
            let mut items = vec![];
            for p in arg(0).items().unwrap_or_default() {
                let kv = p.items().filter(|kv| kv.len() == 2).context("OrderedDict item is not a pair")?;
                items.push((kv[0].clone(), kv[1].clone()));
            }
            Value::Dict(shared(items))
        }
        Global::Set => Value::Set(shared(arg(0).items().unwrap_or_default())),
        Global::Bytearray => match arg(0) {
            b @ Value::Bytes(_) => b,
            Value::None => Value::Bytes(Rc::from(vec![])),
            other => bail!("bytearray of {}", other.kind()),
        },
        Global::CodecsEncode => {
            // Python 3 writes bytes as _codecs.encode(text, 'latin1') in protocols below 3.
            let s = arg(0).as_str().context("_codecs.encode without text")?.to_string();
            let enc = arg(1).as_str().unwrap_or("utf-8").to_ascii_lowercase();
            let bytes: Vec<u8> = match enc.as_str() {
                "latin1" | "latin-1" | "iso-8859-1" => {
                    s.chars().map(|c| u8::try_from(c as u32).context("non-latin1 character")).collect::<Result<_>>()?
                }
                "utf-8" | "utf8" => s.into_bytes(),
                other => bail!("_codecs.encode with encoding {other:?}"),
            };
            Value::Bytes(bytes.into())
        }
        Global::Reconstructor => new_object(&arg(0), vec![])?,
        Global::RebuildTensor | Global::RebuildTensorV2 => {
            let Value::Storage(ref s) = arg(0) else { bail!("tensor rebuilt from {}", arg(0).kind()) };
            let offset = usize::try_from(arg(1).as_int().context("tensor offset")?)?;
            let size = dims(&arg(2))?;
            let stride = dims(&arg(3))?;
            let data = gather(&s.data, s.elem.size(), offset, &size, &stride)?;
            Value::Array(Rc::new(Array::new(s.elem, size, data, false)?))
        }
        Global::RebuildParameter | Global::RebuildParameterWithState => arg(0),
        Global::RebuildFromTypeV2 => reduce(&arg(0), arg(2).items().context("_rebuild_from_type_v2 arguments")?)?,
        Global::LoadFromBytes => {
            let Value::Bytes(ref b) = arg(0) else { bail!("_load_from_bytes of {}", arg(0).kind()) };
            Value::Storage(Rc::new(super::torch_legacy::load_storage(b)?))
        }
        Global::Persistent => {
            let meta = arg(0);
            let o = obj(Global::Persistent, args);
            if let Value::Object(o) = &o {
                o.borrow_mut().state = meta.get("state").unwrap_or(Value::None);
            }
            o
        }
        other => bail!("malformed pickle: REDUCE calls the class {other:?}"),
    })
}

/// `cls.__new__(cls, *args)` (NEWOBJ).
pub fn new_object(cls: &Value, args: Vec<Value>) -> Result<Value> {
    match cls {
        Value::Global(Global::EasyDict | Global::OrderedDict) => Ok(Value::Dict(shared(vec![]))),
        Value::Global(Global::Network) => Ok(obj(Global::Network, args)),
        Value::Global(Global::Set) => Ok(Value::Set(shared(vec![]))),
        other => bail!("malformed pickle: cannot create an instance of {}", other.kind()),
    }
}

/// BUILD: `obj.__setstate__(state)` or `obj.__dict__.update(state)`.
pub fn build(target: &mut Value, state: Value, at: usize) -> Result<()> {
    match target {
        Value::Object(o) => {
            // (state, slotstate): network classes have no slots.
            let state = match (&state, state.items()) {
                (Value::Tuple(_), Some(t)) if t.len() == 2 && matches!(t[0], Value::Dict(_)) => t[0].clone(),
                _ => state,
            };
            o.borrow_mut().state = state;
        }
        Value::Dict(d) => {
            if let Value::Dict(s) = &state {
                let items = s.borrow().clone();
                d.borrow_mut().extend(items);
            }
        }
        other => bail!("malformed pickle: BUILD on {} at byte {at}", other.kind()),
    }
    Ok(())
}

/// A tuple or list of non-negative integers.
pub fn dims(v: &Value) -> Result<Vec<usize>> {
    let items = v.items().with_context(|| format!("expected a shape, found {}", v.kind()))?;
    items
        .iter()
        .map(|x| x.as_int().and_then(|i| usize::try_from(i).ok()).context("shape entries must be integers >= 0"))
        .collect()
}

/// A numpy dtype object -> (element type, big-endian).
pub fn dtype(v: &Value) -> Result<(Elem, bool)> {
    let Value::Object(o) = v else { bail!("expected a numpy dtype, found {}", v.kind()) };
    let o = o.borrow();
    ensure!(o.class == Global::Dtype, "expected a numpy dtype, found {}", v.kind());
    let spec = o.args.first().and_then(Value::as_str).context("numpy dtype without a type code")?;
    let (order, code) = match spec.chars().next() {
        Some(c @ ('<' | '>' | '=' | '|')) => (Some(c), &spec[1..]),
        _ => (None, spec),
    };
    // The byte order is the dtype's state[1].
    let state_order = o.state.items().and_then(|s| s.get(1).and_then(|x| x.as_str().map(str::to_string)));
    let order = state_order.and_then(|s| s.chars().next()).or(order).unwrap_or('<');
    let elem = Elem::from_numpy(code).with_context(|| format!("numpy dtype '{spec}' is not supported"))?;
    Ok((elem, order == '>' && elem.size() > 1))
}

fn array_from(elem: Elem, shape: Vec<usize>, data: Rc<[u8]>, big: bool, fortran: bool) -> Result<Array> {
    if !fortran || shape.len() < 2 {
        return Array::new(elem, shape, data, big);
    }
    // Column-major data: read it as the reversed shape (C order), then gather with transposed strides.
    let mut strides = vec![0usize; shape.len()];
    let mut s = 1;
    for (i, &d) in shape.iter().enumerate() {
        strides[i] = s;
        s *= d.max(1);
    }
    let swapped = Array::new(elem, shape.iter().rev().copied().collect(), data, big)?;
    let out = gather(&swapped.data, elem.size(), 0, &shape, &strides)?;
    Array::new(elem, shape, out, false)
}

/// A numpy array from `_reconstruct(ndarray, ...)` and its `__setstate__` state.
pub fn ndarray(o: &Object) -> Result<Array> {
    let st = o.state.items().context("numpy array without state")?;
    // (version, shape, dtype, is_fortran, data); numpy before 1.0 wrote no version.
    let st = if st.len() == 5 { &st[1..] } else { &st[..] };
    ensure!(st.len() == 4, "numpy array state has {} fields", st.len());
    let shape = dims(&st[0])?;
    let (elem, big) = dtype(&st[1])?;
    let fortran = matches!(st[2], Value::Bool(true) | Value::Int(1));
    let data = match &st[3] {
        Value::Bytes(b) => b.clone(),
        other => bail!("numpy array with {} as data (object arrays are not network data)", other.kind()),
    };
    array_from(elem, shape, data, big, fortran)
}

/// An array from a numpy array (reconstructed or scalar) or a torch tensor.
pub fn as_array(v: &Value) -> Result<Rc<Array>> {
    match v {
        Value::Array(a) => Ok(a.clone()),
        Value::Object(o) if o.borrow().class == Global::NdReconstruct => Ok(Rc::new(ndarray(&o.borrow())?)),
        other => bail!("expected an array, found {}", other.kind()),
    }
}
