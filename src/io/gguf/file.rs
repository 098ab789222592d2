//! The GGUF container: header, metadata key/values and tensor directory, read from a memory map.
//!
//! Every read is bounds-checked against the mapped length, so a truncated or corrupt file
//! yields a [`GgufError`] instead of a panic or an out-of-bounds access.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::GgufError;
use super::dequant::GgmlType;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions (GGML_MAX_DIMS).
const MAX_DIMS: u32 = 4;
/// ggml's tensor name buffer, NUL included (GGML_MAX_NAME).
const GGML_MAX_NAME: usize = 64;

/// One metadata value, as typed in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<MetaValue>),
}

impl MetaValue {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::U8(_) => "u8",
            Self::I8(_) => "i8",
            Self::U16(_) => "u16",
            Self::I16(_) => "i16",
            Self::U32(_) => "u32",
            Self::I32(_) => "i32",
            Self::U64(_) => "u64",
            Self::I64(_) => "i64",
            Self::F32(_) => "f32",
            Self::F64(_) => "f64",
            Self::Bool(_) => "bool",
            Self::String(_) => "string",
            Self::Array(_) => "array",
        }
    }

    /// Any integer type, as i64 (u64 values above i64::MAX give None).
    pub fn as_i64(&self) -> Option<i64> {
        Some(match *self {
            Self::U8(v) => v.into(),
            Self::I8(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U64(v) => i64::try_from(v).ok()?,
            Self::I64(v) => v,
            _ => return None,
        })
    }

    /// Floats and integers, as f64. An f32 is converted through its shortest decimal form so
    /// that e.g. 1e-5 stays 1e-5 rather than becoming 9.999999747378752e-6.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => v.to_string().parse().ok(),
            Self::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where one tensor lives in the file.
#[derive(Debug, Clone)]
pub(crate) struct TensorInfo {
    pub name: String,
    /// ggml order: dims[0] is the fastest-varying (columns).
    pub dims: Vec<u64>,
    pub type_id: u32,
    /// Absolute byte range in the file; None when the type is not one we decode (size unknown).
    pub bytes: Option<(usize, usize)>,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        // Checked at open time not to overflow.
        self.dims.iter().product()
    }
}

/// A parsed GGUF file; tensor bytes stay in the memory map until asked for.
pub(crate) struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    pub by_name: HashMap<String, usize>,
    map: Mmap,
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io_err = |source| GgufError::Io { path: path.to_path_buf(), source };
        let file = File::open(path).map_err(io_err)?;
        // SAFETY: the map is only read, and every access is bounds-checked against its length.
        // Another process truncating the file while it is mapped is outside what we can guard.
        let map = unsafe { Mmap::map(&file) }.map_err(io_err)?;
        let mut r = Reader { data: &map, pos: 0, path };

        let magic = r.take(4, "the magic number")?;
        if magic != MAGIC {
            let mut found = [0u8; 4];
            found.copy_from_slice(magic);
            return Err(GgufError::BadMagic { path: path.to_path_buf(), found });
        }
        let version = r.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::UnsupportedVersion { path: path.to_path_buf(), version });
        }
        let n_tensors = r.u64("the tensor count")?;
        let n_kv = r.u64("the metadata count")?;

        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = r.string(&format!("metadata key #{i}"))?;
            let what = format!("metadata value '{}'", excerpt(&key));
            let ty = r.u32(&what)?;
            let value = r.value(ty, &what, 0)?;
            metadata.insert(key, value);
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => match v.as_i64() {
                Some(a) if a > 0 && (a as u64).is_power_of_two() => a as u64,
                _ => {
                    return Err(r.corrupt(format!("general.alignment {v:?} is not a power of two")));
                }
            },
        };

        let mut infos = Vec::new();
        for i in 0..n_tensors {
            let name = r.string(&format!("the name of tensor #{i}"))?;
            // ggml keeps a name in GGML_MAX_NAME bytes with its NUL (llama.cpp refuses longer ones):
            // a longer "name" comes from a corrupt length and holds file content.
            if name.len() >= GGML_MAX_NAME {
                let what = format!("the name of tensor #{i} is {} bytes long (at most {})", name.len(), GGML_MAX_NAME - 1);
                return Err(r.corrupt(what));
            }
            let what = format!("the shape of tensor '{name}'");
            let n_dims = r.u32(&what)?;
            if n_dims > MAX_DIMS {
                return Err(r.corrupt(format!("tensor '{name}' has {n_dims} dimensions (at most {MAX_DIMS})")));
            }
            let dims = (0..n_dims).map(|_| r.u64(&what)).collect::<Result<Vec<_>, _>>()?;
            let type_id = r.u32(&format!("the type of tensor '{name}'"))?;
            let offset = r.u64(&format!("the offset of tensor '{name}'"))?;
            infos.push((name, dims, type_id, offset));
        }
        let data_start = align_up(r.pos as u64, alignment).ok_or_else(|| r.corrupt("tensor data start overflows".into()))?;

        let mut tensors = Vec::with_capacity(infos.len());
        let mut by_name = HashMap::with_capacity(infos.len());
        for (name, dims, type_id, offset) in infos {
            let bytes = r.tensor_range(&name, &dims, type_id, offset, data_start, alignment)?;
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(r.corrupt(format!("tensor '{name}' appears twice")));
            }
            tensors.push(TensorInfo { name, dims, type_id, bytes });
        }
        r.check_overlaps(&tensors, data_start)?;

        Ok(Self { path: path.to_path_buf(), version, metadata, tensors, by_name, map })
    }

    /// The raw bytes of a tensor whose type we decode (range checked at open).
    pub fn tensor_bytes(&self, info: &TensorInfo) -> Option<&[u8]> {
        info.bytes.and_then(|(start, end)| self.map.get(start..end))
    }

    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.metadata.get(key)
    }

    fn type_error(&self, key: &str, expected: &'static str, found: &MetaValue) -> GgufError {
        GgufError::MetadataType { path: self.path.clone(), key: key.to_string(), expected, found: found.type_name() }
    }

    fn missing(&self, key: &str) -> GgufError {
        GgufError::MissingMetadata { path: self.path.clone(), key: key.to_string() }
    }

    /// A non-negative integer that fits in usize; Ok(None) when the key is absent.
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>, GgufError> {
        self.get(key)
            .map(|v| v.as_i64().and_then(|i| usize::try_from(i).ok()).ok_or_else(|| self.type_error(key, "non-negative integer", v)))
            .transpose()
    }

    pub fn usize(&self, key: &str) -> Result<usize, GgufError> {
        self.opt_usize(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        self.get(key).map(|v| v.as_f64().ok_or_else(|| self.type_error(key, "number", v))).transpose()
    }

    pub fn f64(&self, key: &str) -> Result<f64, GgufError> {
        self.opt_f64(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.get(key).map(|v| v.as_str().ok_or_else(|| self.type_error(key, "string", v))).transpose()
    }

    pub fn str(&self, key: &str) -> Result<&str, GgufError> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.get(key).map(|v| v.as_bool().ok_or_else(|| self.type_error(key, "bool", v))).transpose()
    }

    /// An array whose items all convert with `f`; Ok(None) when the key is absent.
    pub fn opt_array<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        f: impl Fn(&'a MetaValue) -> Option<T>,
    ) -> Result<Option<Vec<T>>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let items = v.as_array().ok_or_else(|| self.type_error(key, expected, v))?;
        let out = items.iter().map(|item| f(item).ok_or_else(|| self.type_error(key, expected, item)));
        out.collect::<Result<Vec<_>, _>>().map(Some)
    }
}

/// A metadata key as error messages show it: a corrupt length can make a "key" of most of the file.
fn excerpt(key: &str) -> String {
    const SHOWN: usize = 64;
    match key.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}… ({} bytes)", &key[..cut], key.len()),
        None => key.to_string(),
    }
}

fn align_up(pos: u64, alignment: u64) -> Option<u64> {
    Some(pos.checked_add(alignment - 1)? / alignment * alignment)
}

/// Arrays nest at most this deep; guards the recursion against crafted files.
const MAX_NESTING: u32 = 8;

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let start = self.pos;
        let end = usize::try_from(n).ok().and_then(|n| start.checked_add(n));
        match end.and_then(|end| self.data.get(start..end)) {
            Some(bytes) => {
                self.pos = start + bytes.len();
                Ok(bytes)
            }
            None => Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: what.to_string(),
                needed: (start as u64).saturating_add(n),
                len: self.data.len() as u64,
            }),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        // Some converters store token pieces that are not valid UTF-8; keep such files loadable.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn value(&mut self, ty: u32, what: &str, depth: u32) -> Result<MetaValue, GgufError> {
        Ok(match ty {
            0 => MetaValue::U8(u8::from_le_bytes(self.array(what)?)),
            1 => MetaValue::I8(i8::from_le_bytes(self.array(what)?)),
            2 => MetaValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => MetaValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => MetaValue::U32(u32::from_le_bytes(self.array(what)?)),
            5 => MetaValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => MetaValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(self.corrupt(format!("{what}: bool byte {b}"))),
            },
            8 => MetaValue::String(self.string(what)?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(self.corrupt(format!("{what}: arrays nested deeper than {MAX_NESTING}")));
                }
                let item_ty = self.u32(what)?;
                let n = self.u64(what)?;
                // No with_capacity(n): n is untrusted. Every item consumes at least one byte,
                // so a bogus count ends in a Truncated error once the file runs out.
                let mut items = Vec::new();
                for _ in 0..n {
                    items.push(self.value(item_ty, what, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(u64::from_le_bytes(self.array(what)?)),
            11 => MetaValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => MetaValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(self.corrupt(format!("{what}: unknown value type {other}"))),
        })
    }

    /// Checks a tensor's directory entry; returns its absolute byte range when its type is one
    /// we decode (other types' sizes are not needed, so they are not checked).
    fn tensor_range(
        &self,
        name: &str,
        dims: &[u64],
        type_id: u32,
        offset: u64,
        data_start: u64,
        alignment: u64,
    ) -> Result<Option<(usize, usize)>, GgufError> {
        let Some(n_elements) = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d)) else {
            return Err(self.corrupt(format!("tensor '{name}': element count of {dims:?} overflows")));
        };
        if !offset.is_multiple_of(alignment) {
            return Err(self.corrupt(format!("tensor '{name}': offset {offset} is not a multiple of {alignment}")));
        }
        let Some(ty) = GgmlType::from_id(type_id) else {
            return Ok(None);
        };
        let (block, size) = (ty.block_size() as u64, ty.type_size() as u64);
        let row = dims.first().copied().unwrap_or(1);
        if !row.is_multiple_of(block) {
            return Err(self.corrupt(format!("tensor '{name}': rows of {row} values do not fill whole {} blocks of {block}", ty.name())));
        }
        let Some(len) = (n_elements / block).checked_mul(size) else {
            return Err(self.corrupt(format!("tensor '{name}': the byte size of {dims:?} overflows")));
        };
        let file_len = self.data.len() as u64;
        match data_start.checked_add(offset).and_then(|s| Some((s, s.checked_add(len)?))) {
            // Both ends lie inside the map, hence fit in usize.
            Some((start, end)) if end <= file_len => Ok(Some((start as usize, end as usize))),
            range => Err(GgufError::Truncated {
                path: self.path.to_path_buf(),
                what: format!("the data of tensor '{name}' ({len} bytes at offset {offset})"),
                needed: range.map_or(u64::MAX, |(_, end)| end),
                len: file_len,
            }),
        }
    }

    /// Tensors must not share bytes (llama.cpp refuses such files too): a directory entry whose
    /// offset points into another tensor is corruption, and reading it would pass one tensor's
    /// bytes off as another's weights. Only tensors of types we decode have a known extent.
    fn check_overlaps(&self, tensors: &[TensorInfo], data_start: u64) -> Result<(), GgufError> {
        let mut ranges: Vec<(usize, usize, &str)> =
            tensors.iter().filter_map(|t| t.bytes.map(|(start, end)| (start, end, t.name.as_str()))).filter(|(s, e, _)| s < e).collect();
        ranges.sort_unstable();
        let data = |at: usize| at as u64 - data_start;
        for pair in ranges.windows(2) {
            let ((a_start, a_end, a), (b_start, b_end, b)) = (pair[0], pair[1]);
            if b_start < a_end {
                return Err(self.corrupt(format!(
                    "tensors '{a}' (data bytes {}..{}) and '{b}' (data bytes {}..{}) overlap",
                    data(a_start),
                    data(a_end),
                    data(b_start),
                    data(b_end)
                )));
            }
        }
        Ok(())
    }

    fn corrupt(&self, what: String) -> GgufError {
        GgufError::Corrupt { path: self.path.to_path_buf(), what }
    }
}
