//! Model files in and out: HF folders, GGUF files, and HF folders written back atomically.

pub mod atomic;
pub mod discover;
pub mod export;
pub mod gguf;
pub mod hf;
pub mod random;
pub mod safetensors_file;
pub mod summary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use serde_json::Value;
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::model::precision::FrozenStore;
use crate::model::{FrozenPrecision, Model, ParamRef, Parameters, Weight};
use crate::profile::{OpKind, OpSpec};

/// Where a model came from.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSource {
    HfFolder(PathBuf),
    Gguf(PathBuf),
}

impl ModelSource {
    /// The folder or file the model was read from.
    pub fn path(&self) -> &Path {
        match self {
            Self::HfFolder(p) | Self::Gguf(p) => p,
        }
    }
}

/// Whether `a` and `b` name the same file or folder, however spelled (`a.jsonl`, `./a.jsonl`, a
/// symlink); paths that do not exist are the same only when equal.
pub fn same_path(a: &Path, b: &Path) -> bool {
    a == b || matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// A model with everything needed to train, generate and save it as an HF folder.
#[derive(Clone)]
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Tokenizer,
    /// tokenizer_config.json (chat template, special tokens) when known.
    pub tokenizer_config: Option<Value>,
    pub generation_config: Option<Value>,
    pub source: ModelSource,
}

impl LoadedModel {
    /// The chat template from tokenizer_config.json (HF) or the GGUF metadata.
    pub fn chat_template(&self) -> Option<&str> {
        self.tokenizer_config.as_ref()?.get("chat_template")?.as_str()
    }

    /// The model's chat template ready to render conversations, when it has one this engine can
    /// render (a warning says why not otherwise).
    pub fn chat_renderer(&self) -> Option<crate::data::JinjaChatTemplate> {
        let source = self.chat_template()?;
        let special = |key: &str| {
            let v = self.tokenizer_config.as_ref()?.get(key)?;
            v.as_str().or_else(|| v.get("content")?.as_str()).map(String::from)
        };
        let (bos, eos) = (special("bos_token").unwrap_or_default(), special("eos_token").unwrap_or_default());
        crate::data::JinjaChatTemplate::new(source, &bos, &eos).map_err(|e| tracing::warn!("{e}; conversations use ChatML")).ok()
    }

    /// The token data examples end with (the first EOS id); an error when the model defines none.
    pub fn eos_token_id(&self) -> Result<u32> {
        let path = self.source.path();
        self.eos_token_ids()
            .first()
            .copied()
            .ok_or_else(|| Error::invalid(path, "the model defines no eos_token_id, which examples end with"))
    }

    /// How data files are encoded for this model: examples end with its EOS, conversations use
    /// its chat template, and an encoder-decoder model gets its prompt and target apart (see
    /// `data::Seq2Seq`). `max_len` as `LoadOptions::max_len`.
    pub fn load_options(&self, max_len: usize) -> Result<crate::data::LoadOptions> {
        let chat_template =
            self.chat_renderer().map(|t| std::sync::Arc::new(t) as std::sync::Arc<dyn crate::data::ChatTemplate + Send + Sync>);
        let seq2seq = match self.model.is_encoder_decoder() {
            true => Some(crate::data::Seq2Seq::from_tokenizer(&self.tokenizer)?),
            false => None,
        };
        Ok(crate::data::LoadOptions { chat_template, seq2seq, ..crate::data::LoadOptions::new(max_len, self.eos_token_id()?) })
    }

    /// The generation input for a typed prompt: the text's tokens for a decoder-only model (whose
    /// output continues them), the encoder input with the tokenizer's special tokens (T5's `</s>`)
    /// for an encoder-decoder model, as its training examples have it.
    pub fn prompt_ids(&self, text: &str) -> Result<Vec<u32>> {
        let special = self.model.is_encoder_decoder();
        let encoding = self.tokenizer.encode(text, special).map_err(|e| Error::Other(format!("cannot tokenize the prompt: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Token ids that end generation: generation_config.json's, else config.json's.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        let from_generation = self.generation_config.as_ref().and_then(|g| g.get("eos_token_id")).map(|v| match v {
            Value::Array(a) => a.iter().filter_map(Value::as_u64).map(|i| i as u32).collect(),
            v => v.as_u64().map(|i| i as u32).into_iter().collect::<Vec<_>>(),
        });
        from_generation.filter(|ids| !ids.is_empty()).unwrap_or_else(|| self.model.info().eos_token_ids)
    }
}

/// Loads an HF folder (a directory) or a GGUF file.
pub fn load_model(path: &Path, device: &Device) -> Result<LoadedModel> {
    if path.is_dir() {
        hf::load_folder(path, device)
    } else if is_gguf(path) {
        load_gguf(path, device)
    } else if path.exists() {
        Err(Error::Unsupported {
            path: path.into(),
            what: "model file".into(),
            supported: "an HF folder (config.json + safetensors + tokenizer.json) or a .gguf file".into(),
        })
    } else {
        Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder")))
    }
}

/// How a run on `device` stores the frozen matrices of `model`, loaded from `path`, under
/// `precision`: their float type and, under `source` with a GGUF file, the blocks of each linear
/// weight the file keeps in a quantization the kernels decode.
pub fn frozen_store(precision: FrozenPrecision, path: &Path, model: &Model, device: &Device) -> Result<FrozenStore> {
    let mut store = FrozenStore::float(precision.storage(device));
    if precision != FrozenPrecision::Source || !is_gguf(path) {
        return Ok(store);
    }
    let gguf = gguf::GgufModel::open(path)?;
    let mut weights = Vec::new();
    model.visit(&mut |name, p| match p {
        // Kept quantized already (the app's base model, shared with the run): the same blocks.
        ParamRef::Weight(Weight::Quantized(q)) => drop(store.quantized.insert(name.to_string(), q.clone())),
        ParamRef::Weight(_) => weights.push(name.to_string()),
        _ => {}
    });
    for name in weights {
        if let Some(matrix) = gguf.quantized_matrix(&name, device)? {
            store.quantized.insert(name, matrix);
        }
    }
    Ok(store)
}

/// Bytes per weight of each linear weight of `ops` that the model file at `path` keeps in a
/// quantization the frozen kernels decode (empty for anything but a GGUF file): what `source`
/// storage takes, for the memory estimates (`train::memory::FrozenBytes`).
pub fn source_bytes(path: &Path, ops: &[OpSpec]) -> BTreeMap<String, f64> {
    let gguf = match is_gguf(path).then(|| gguf::GgufModel::open(path)) {
        Some(Ok(gguf)) => gguf,
        _ => return BTreeMap::new(),
    };
    ops.iter()
        .filter(|op| matches!(op.kind, OpKind::Linear { .. }))
        .filter_map(|op| gguf.quantized_format(&op.name).map(|f| (op.name.clone(), f.ty.bytes_per_value())))
        .collect()
}

/// Whether `path` is a GGUF file, by its name or its first bytes.
fn is_gguf(path: &Path) -> bool {
    !path.is_dir() && (gguf::has_gguf_name(path) || starts_like_gguf(path))
}

/// Whether a file without the .gguf extension holds GGUF data: Ollama keeps its models as
/// `blobs/sha256-<hex>`, named by digest alone.
fn starts_like_gguf(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == b"GGUF"
}

/// Loads a GGUF file (dequantized to f32, q/k permutation undone, tokenizer rebuilt from metadata).
pub fn load_gguf(path: &Path, device: &Device) -> Result<LoadedModel> {
    load_gguf_keeping(path, device, false)
}

/// Loads the model at `path` to run with `frozen_precision` `precision`: under `source`, a GGUF
/// file's linear weights in a quantization the kernels decode stay in it from the start (never an
/// f32 copy of them, so a model loads in about the memory it trains in); otherwise
/// [`load_model`].
pub fn load_model_stored(path: &Path, device: &Device, precision: FrozenPrecision) -> Result<LoadedModel> {
    match precision {
        FrozenPrecision::Source if is_gguf(path) => load_gguf_keeping(path, device, true),
        _ => load_model(path, device),
    }
}

/// [`load_gguf`], keeping the quantized linear weights as they are when `keep_quantized`.
fn load_gguf_keeping(path: &Path, device: &Device, keep_quantized: bool) -> Result<LoadedModel> {
    let gguf = gguf::GgufModel::open(path)?;
    let mut quantized = |name: &str, shape: [usize; 2]| match gguf.quantized_matrix(name, device)? {
        Some(q) if q.dims() != shape => {
            Err(Error::tensor(path, name, format!("shape {:?} disagrees with the metadata, which implies {shape:?}", q.dims())))
        }
        q => Ok(q),
    };
    let weights: Option<&mut crate::model::loader::WeightSource<'_>> = keep_quantized.then_some(&mut quantized);
    let mut values = |name: &str, shape: &[usize]| {
        let (found, values) = gguf.load_tensor(name)?;
        if found != shape {
            return Err(Error::tensor(path, name, format!("shape {found:?} disagrees with the metadata, which implies {shape:?}")));
        }
        check_finite(path, name, &values)?;
        Ok(values)
    };
    let model = Model::load_with(gguf.config_json(), &path.display().to_string(), device, &mut values, weights)?;
    let tokenizer = gguf.tokenizer()?;
    let token = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
    let mut tokenizer_config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model.info().context_length,
        "bos_token": token(gguf.bos_token_id()),
        "eos_token": token(gguf.eos_token_id()),
        "pad_token": token(model.info().pad_token_id),
    });
    if let Some(template) = gguf.chat_template() {
        tokenizer_config["chat_template"] = Value::String(template.to_string());
    }
    Ok(LoadedModel {
        model,
        tokenizer,
        tokenizer_config: Some(tokenizer_config),
        generation_config: None,
        source: ModelSource::Gguf(path.to_path_buf()),
    })
}

/// Refuses a weight holding NaN or infinity (a corrupted or overflowed file): it would spread
/// through every activation, and training would report NaN losses long after the file was read.
/// One pass over values that were just decoded, so it costs little next to reading them.
fn check_finite(path: &Path, tensor: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::tensor(path, tensor, format!("value #{i} is {}: the weights must be finite numbers", values[i]))),
        None => Ok(()),
    }
}
