//! A small GGUF writer for tests: header, metadata of every value type, and tensors at aligned
//! offsets, as llama.cpp lays them out. Used by tests/gguf.rs and tests/discover.rs.

use std::path::PathBuf;

use tempfile::TempDir;

#[derive(Clone, Debug)]
pub enum V {
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
    Str(String),
    Arr(u32, Vec<V>),
}

impl V {
    fn type_id(&self) -> u32 {
        match self {
            V::U8(_) => 0,
            V::I8(_) => 1,
            V::U16(_) => 2,
            V::I16(_) => 3,
            V::U32(_) => 4,
            V::I32(_) => 5,
            V::F32(_) => 6,
            V::Bool(_) => 7,
            V::Str(_) => 8,
            V::Arr(..) => 9,
            V::U64(_) => 10,
            V::I64(_) => 11,
            V::F64(_) => 12,
        }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        match self {
            V::U8(v) => out.push(*v),
            V::I8(v) => out.extend(v.to_le_bytes()),
            V::U16(v) => out.extend(v.to_le_bytes()),
            V::I16(v) => out.extend(v.to_le_bytes()),
            V::U32(v) => out.extend(v.to_le_bytes()),
            V::I32(v) => out.extend(v.to_le_bytes()),
            V::U64(v) => out.extend(v.to_le_bytes()),
            V::I64(v) => out.extend(v.to_le_bytes()),
            V::F32(v) => out.extend(v.to_le_bytes()),
            V::F64(v) => out.extend(v.to_le_bytes()),
            V::Bool(v) => out.push(*v as u8),
            V::Str(s) => write_str(out, s),
            V::Arr(ty, items) => {
                out.extend(ty.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for item in items {
                    item.write(out);
                }
            }
        }
    }
}

pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

pub fn s(v: &str) -> V {
    V::Str(v.to_string())
}

pub fn strs<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> V {
    V::Arr(8, items.into_iter().map(|t| s(t.as_ref())).collect())
}

pub fn i32s(items: impl IntoIterator<Item = i32>) -> V {
    V::Arr(5, items.into_iter().map(V::I32).collect())
}

pub fn f32s(items: impl IntoIterator<Item = f32>) -> V {
    V::Arr(6, items.into_iter().map(V::F32).collect())
}

pub struct Gguf {
    pub magic: [u8; 4],
    pub version: u32,
    pub kv: Vec<(String, V)>,
    pub tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
}

impl Gguf {
    pub fn new(arch: &str) -> Self {
        Gguf { magic: *b"GGUF", version: 3, kv: vec![], tensors: vec![] }.kv("general.architecture", s(arch))
    }

    /// A Llama header with the given sizes (no tensors).
    pub fn llama(hidden: u32, heads: u32, kv_heads: u32, layers: u32, ffn: u32) -> Self {
        Self::new("llama")
            .kv("llama.embedding_length", V::U32(hidden))
            .kv("llama.attention.head_count", V::U32(heads))
            .kv("llama.attention.head_count_kv", V::U32(kv_heads))
            .kv("llama.block_count", V::U32(layers))
            .kv("llama.feed_forward_length", V::U32(ffn))
            .kv("llama.context_length", V::U32(256))
            .kv("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5))
    }

    pub fn kv(mut self, key: &str, value: V) -> Self {
        self.kv.retain(|(k, _)| k != key);
        self.kv.push((key.to_string(), value));
        self
    }

    pub fn tensor(mut self, name: &str, ne: &[u64], ty: u32, data: Vec<u8>) -> Self {
        self.tensors.push((name.to_string(), ne.to_vec(), ty, data));
        self
    }

    pub fn f32_tensor(self, name: &str, ne: &[u64], values: &[f32]) -> Self {
        self.tensor(name, ne, 0, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    pub fn bytes(&self) -> Vec<u8> {
        let alignment =
            self.kv.iter().find(|(k, _)| k == "general.alignment").map_or(32, |(_, v)| if let V::U32(a) = v { *a as usize } else { 32 });
        let mut out = self.magic.to_vec();
        out.extend(self.version.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            write_str(&mut out, k);
            out.extend(v.type_id().to_le_bytes());
            v.write(&mut out);
        }
        let mut offset = 0usize;
        for (name, ne, ty, data) in &self.tensors {
            write_str(&mut out, name);
            out.extend((ne.len() as u32).to_le_bytes());
            for d in ne {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offset = (offset + data.len()).next_multiple_of(alignment);
        }
        for (i, (_, _, _, data)) in self.tensors.iter().enumerate() {
            out.resize(out.len().next_multiple_of(alignment), 0);
            out.extend(data);
            if i + 1 < self.tensors.len() {
                out.resize(out.len().next_multiple_of(alignment), 0);
            }
        }
        out
    }

    pub fn write(&self, dir: &TempDir, name: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, self.bytes()).unwrap();
        path
    }
}
