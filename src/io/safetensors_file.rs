//! Reading and writing f32 tensors in safetensors files (single or sharded), memory-mapped.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};

use crate::error::{Error, Result};

/// All tensors of a checkpoint, possibly spread over shards, by name.
pub struct SafetensorsFiles {
    shards: Vec<(PathBuf, Mmap)>,
    /// tensor name -> shard index
    index: BTreeMap<String, usize>,
}

impl SafetensorsFiles {
    /// Opens `model.safetensors`, or the shards listed by `model.safetensors.index.json`, in `dir`.
    pub fn open_dir(dir: &Path) -> Result<Self> {
        let single = dir.join("model.safetensors");
        let index_path = dir.join("model.safetensors.index.json");
        if single.exists() {
            return Self::open_files(&[single]);
        }
        if !index_path.exists() {
            return Err(Error::invalid(dir, "no model.safetensors or model.safetensors.index.json in this folder"));
        }
        let text = std::fs::read_to_string(&index_path).map_err(|e| Error::io(&index_path, e))?;
        let index: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::invalid(&index_path, format!("not valid JSON: {e}")))?;
        let map =
            index.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| Error::invalid(&index_path, "no \"weight_map\" object"))?;
        let mut files: Vec<String> = map.values().filter_map(|v| v.as_str().map(String::from)).collect();
        files.sort();
        files.dedup();
        let paths: Vec<PathBuf> = files.iter().map(|f| dir.join(f)).collect();
        Self::open_files(&paths)
    }

    pub fn open_files(paths: &[PathBuf]) -> Result<Self> {
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for path in paths {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: the map is read-only; a file changed underneath us can only yield wrong
            // values, which the header checks below and later shape checks catch.
            let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            let st = SafeTensors::deserialize(&mmap).map_err(|e| Error::invalid(path, format!("not a valid safetensors file: {e}")))?;
            for name in st.names() {
                index.insert(name.to_string(), shards.len());
            }
            shards.push((path.clone(), mmap));
        }
        Ok(Self { shards, index })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The file holding `name`, for error messages.
    pub fn path_of(&self, name: &str) -> Option<&Path> {
        self.index.get(name).map(|&i| self.shards[i].0.as_path())
    }

    fn view<T>(&self, name: &str, read: impl FnOnce(&Path, &TensorView<'_>) -> Result<T>) -> Result<T> {
        let &i = self.index.get(name).ok_or_else(|| Error::MissingTensor {
            path: self.shards.first().map(|s| s.0.clone()).unwrap_or_default(),
            tensor: name.into(),
        })?;
        let (path, mmap) = &self.shards[i];
        let st = SafeTensors::deserialize(mmap).map_err(|e| Error::invalid(path, e.to_string()))?;
        let view = st.tensor(name).map_err(|e| Error::tensor(path, name, e.to_string()))?;
        read(path, &view)
    }

    /// Shape and values of an integer tensor (I64 or I32), e.g. token ids in test fixtures.
    pub fn read_i64(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>)> {
        self.view(name, |path, view| {
            let data = view.data();
            let values = match view.dtype() {
                Dtype::I64 => data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect(),
                Dtype::I32 => data.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64).collect(),
                other => return Err(Error::tensor(path, name, format!("dtype {other:?} is not an integer type"))),
            };
            Ok((view.shape().to_vec(), values))
        })
    }

    /// Shape and f32 values of a tensor stored as f32, f16 or bf16.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        self.view(name, |path, view| Self::decode_float(path, name, view))
    }

    fn decode_float(path: &Path, name: &str, view: &TensorView<'_>) -> Result<(Vec<usize>, Vec<f32>)> {
        let data = view.data();
        let values = match view.dtype() {
            Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => data.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => data.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => {
                return Err(Error::Unsupported {
                    path: path.to_path_buf(),
                    what: format!("dtype {other:?} of tensor {name}"),
                    supported: "F32, F16, BF16".into(),
                });
            }
        };
        Ok((view.shape().to_vec(), values))
    }
}

/// Writes f32 tensors (row-major) with optional string metadata to `path`.
pub fn write_f32(path: &Path, tensors: &[(String, Vec<usize>, Vec<f32>)], metadata: Option<HashMap<String, String>>) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, shape, values)| {
            TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(values))
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::tensor(path, name, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    // safetensors writes through a private (0600) temporary file; the saved file keeps an existing
    // file's permissions, or gets those any new file here gets, like the config beside it. An
    // existing file is only read, so it stays whole until the rename replaces it.
    let permissions = match std::fs::metadata(path) {
        Ok(existing) => existing.permissions(),
        Err(_) => File::create(path).and_then(|f| f.metadata()).map_err(|e| Error::io(path, e))?.permissions(),
    };
    safetensors::serialize_to_file(views, metadata, path).map_err(|e| Error::invalid(path, e.to_string()))?;
    std::fs::set_permissions(path, permissions).map_err(|e| Error::io(path, e))
}
