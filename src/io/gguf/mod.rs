//! GGUF model files (as Ollama and LM Studio keep them) read without an ML framework.
//!
//! [`GgufModel`] memory-maps a file, checks it, and hands out f32 tensors under their Hugging Face
//! names and in HF layout, an HF `config.json`, and a rebuilt `tokenizers::Tokenizer`.
//!
//! Layout notes:
//! - GGUF lists dims fastest-first (`ne[0]` = columns), so an HF `[out, in]` matrix is stored
//!   with `ne = [in, out]`; the data order is the same, only the shape is reversed.
//! - llama.cpp's converter reorders the rows of Llama's q_proj/k_proj within each head from
//!   HF's "first half / second half" rotary layout to interleaved pairs; we undo it on load.
//!
//! Files: `file.rs` (container parsing), `dequant.rs` (block decoders), `tokenizer.rs`.

mod dequant;
pub mod export;
mod file;
mod quant;
mod tokenizer;
mod write;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

pub use dequant::GgmlType;

use crate::kernels::frozen::QuantFormat;
use crate::model::QuantMatrix;
pub(crate) use dequant::dequantize;
pub use file::MetaValue;
use file::{GgufFile, TensorInfo};
pub use write::{Precision, written_type};

/// Everything that can go wrong reading a GGUF file. Messages name the file, and the tensor or
/// metadata key involved.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("{}: cannot read the file: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a GGUF file (it starts with \"{}\", expected \"GGUF\")", .path.display(), .found.escape_ascii())]
    BadMagic { path: PathBuf, found: [u8; 4] },
    #[error("{}: GGUF version {version} is not supported (supported: 2 and 3, little-endian)", .path.display())]
    UnsupportedVersion { path: PathBuf, version: u32 },
    #[error("{}: the file is truncated: {what} ends at byte {needed} but the file has {len} bytes", .path.display())]
    Truncated { path: PathBuf, what: String, needed: u64, len: u64 },
    #[error("{}: corrupt GGUF file: {what}", .path.display())]
    Corrupt { path: PathBuf, what: String },
    #[error("{}: metadata key '{key}' is missing", .path.display())]
    MissingMetadata { path: PathBuf, key: String },
    #[error("{}: metadata key '{key}' holds a {found}, expected {expected}", .path.display())]
    MetadataType { path: PathBuf, key: String, expected: &'static str, found: &'static str },
    #[error("{}: metadata key '{key}': {what}", .path.display())]
    InvalidMetadata { path: PathBuf, key: String, what: String },
    #[error("{}: architecture '{architecture}' is not supported (supported: {supported})", .path.display())]
    UnsupportedArchitecture { path: PathBuf, architecture: String, supported: &'static str },
    #[error("{}: tensor '{tensor}' has type {ty}, which cannot be decoded (supported: {supported})", .path.display())]
    UnsupportedTensorType { path: PathBuf, tensor: String, ty: String, supported: String },
    #[error("{}: {what} is not supported", .path.display())]
    Unsupported { path: PathBuf, what: String },
    #[error("{}: no tensor named '{name}'{hint}", .path.display())]
    TensorNotFound { path: PathBuf, name: String, hint: String },
    #[error("{}: tensor '{tensor}': {what}", .path.display())]
    InvalidTensor { path: PathBuf, tensor: String, what: String },
    #[error("{}: tokenizer model '{model}' is not supported (supported: {supported})", .path.display())]
    UnsupportedTokenizer { path: PathBuf, model: String, supported: &'static str },
    #[error("{}: cannot build the tokenizer: {what}", .path.display())]
    Tokenizer { path: PathBuf, what: String },
}

/// Model families whose GGUF tensors and hyper-parameters map onto HF transformers classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Architecture {
    Llama,
    Qwen2,
}

const SUPPORTED_ARCHITECTURES: &str = "llama (also Mistral, SmolLM, TinyLlama), qwen2";

impl Architecture {
    /// The architecture a `general.architecture` value names, when this build runs it.
    pub fn from_gguf_name(name: &str) -> Option<Self> {
        [Self::Llama, Self::Qwen2].into_iter().find(|a| a.gguf_name() == name)
    }

    /// The `general.architecture` value, which also prefixes the hyper-parameter keys.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
        }
    }

    /// The HF transformers class (`architectures[0]` of config.json).
    pub fn hf_class(self) -> &'static str {
        match self {
            Self::Llama => "LlamaForCausalLM",
            Self::Qwen2 => "Qwen2ForCausalLM",
        }
    }
}

/// RoPE scaling as HF's `rope_parameters` / `rope_scaling` describe it.
#[derive(Debug, Clone, PartialEq)]
enum RopeScaling {
    Linear {
        factor: f64,
    },
    Yarn {
        factor: f64,
        original_context: usize,
    },
    /// Llama 3.1+: `factor` below a low-frequency wavelength, none above a high one, blended between.
    Llama3 {
        factor: f64,
        low_freq_factor: f64,
        high_freq_factor: f64,
        original_context: usize,
    },
}

impl RopeScaling {
    fn to_json(&self) -> Value {
        match *self {
            Self::Linear { factor } => json!({"rope_type": "linear", "factor": factor}),
            Self::Yarn { factor, original_context } => json!({
                "rope_type": "yarn",
                "factor": factor,
                "original_max_position_embeddings": original_context,
            }),
            Self::Llama3 { factor, low_freq_factor, high_freq_factor, original_context } => json!({
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_context,
            }),
        }
    }
}

/// gguf-split's metadata key: the number of files one model is spread over.
const SPLIT_COUNT: &str = "split.count";

/// Llama 3.1+ files carry their RoPE scaling as this tensor of per-frequency divisors.
pub(crate) const ROPE_FREQS: &str = "rope_freqs.weight";

#[derive(Debug, Clone)]
struct HParams {
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rms_norm_eps: f64,
    rope_theta: f64,
    rope_scaling: Option<RopeScaling>,
    context: usize,
    vocab: usize,
}

/// What the app shows about a file before loading it.
#[derive(Debug, Clone, Serialize)]
pub struct GgufSummary {
    pub path: PathBuf,
    pub gguf_version: u32,
    pub architecture: Architecture,
    /// `general.name`, when the file has one.
    pub name: Option<String>,
    /// Elements over all tensors with an HF name (tied embeddings counted once).
    pub parameter_count: u64,
    /// ggml type name -> number of tensors stored with it, most frequent first.
    pub tensor_types: Vec<(String, usize)>,
    /// Tensors without an HF counterpart, not loaded (Llama 3's `rope_freqs.weight` is folded
    /// into the config's RoPE scaling).
    pub unmapped_tensors: Vec<String>,
    pub tokenizer_model: Option<String>,
    pub context_length: usize,
}

/// What a list of models shows about a GGUF file, read from its header and tensor directory
/// alone: no tensor data and no tokenizer is built, so a folder of large files lists quickly.
pub struct GgufListing {
    /// `general.architecture`, whether or not this build runs it.
    pub architecture: Option<String>,
    /// llama.cpp's file type (`general.file_type`: Q4_K_M, Q8_0, F16, ...), else the type that
    /// holds most of the weights.
    pub quantization: Option<String>,
    /// The model, when the file passes every check loading it makes before reading tensor data
    /// (architecture, hyper-parameters, tensor types, tokenizer kind); otherwise why not.
    pub model: Result<GgufModel, GgufError>,
}

impl GgufListing {
    /// An error only when the file is not a readable GGUF file at all.
    pub fn read(path: &Path) -> Result<Self, GgufError> {
        let file = GgufFile::open(path)?;
        let architecture = file.get("general.architecture").and_then(MetaValue::as_str).map(str::to_string);
        let file_type = file.get("general.file_type").and_then(MetaValue::as_i64).and_then(|id| u32::try_from(id).ok());
        let quantization = file_type.and_then(dequant::file_type_name).map(str::to_string).or_else(|| dominant_type(&file));
        let model = GgufModel::from_file(file).and_then(|m| {
            m.check_tensor_types()?;
            tokenizer::check_supported(&m.file)?;
            Ok(m)
        });
        Ok(Self { architecture, quantization, model })
    }
}

/// The tensor type holding the most values, as llama.cpp names it.
fn dominant_type(file: &GgufFile) -> Option<String> {
    let mut elements: BTreeMap<u32, u64> = BTreeMap::new();
    for t in &file.tensors {
        // Saturating: a crafted directory may claim sizes whose sum overflows.
        let n = elements.entry(t.type_id).or_default();
        *n = n.saturating_add(t.n_elements());
    }
    let (id, _) = elements.into_iter().max_by_key(|&(_, n)| n)?;
    Some(dequant::known_name(id).map_or_else(|| dequant::type_name(id), str::to_string))
}

/// An open GGUF model file.
pub struct GgufModel {
    file: GgufFile,
    arch: Architecture,
    hp: HParams,
    /// HF name -> index into `file.tensors`, in file order.
    mapped: Vec<(String, usize)>,
    by_hf_name: HashMap<String, usize>,
}

impl GgufModel {
    /// Maps and checks the file: header, metadata, tensor directory (every tensor's bytes must
    /// lie inside the file), architecture and hyper-parameters. Tensor data is decoded lazily.
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        Self::from_file(GgufFile::open(path)?)
    }

    fn from_file(file: GgufFile) -> Result<Self, GgufError> {
        let name = file.str("general.architecture")?;
        let arch = Architecture::from_gguf_name(name).ok_or_else(|| GgufError::UnsupportedArchitecture {
            path: file.path.clone(),
            architecture: name.to_string(),
            supported: SUPPORTED_ARCHITECTURES,
        })?;
        // llama.cpp's gguf-split spreads one model over several files; this loader reads one.
        if let Some(count) = file.opt_usize(SPLIT_COUNT)?.filter(|&n| n > 1) {
            let what = format!("a model split across {count} files ({SPLIT_COUNT}; merge them with llama-gguf-split --merge)");
            return Err(GgufError::Unsupported { path: file.path.clone(), what });
        }
        let mapped: Vec<(String, usize)> = file.tensors.iter().enumerate().filter_map(|(i, t)| hf_name(&t.name).map(|n| (n, i))).collect();
        let by_hf_name = mapped.iter().map(|(n, i)| (n.clone(), *i)).collect();
        let hp = read_hparams(&file, arch, &by_hf_name)?;
        Ok(Self { file, arch, hp, mapped, by_hf_name })
    }

    pub fn path(&self) -> &Path {
        &self.file.path
    }

    pub fn architecture(&self) -> Architecture {
        self.arch
    }

    /// All metadata key/values, including the tokenizer's.
    pub fn metadata(&self) -> &BTreeMap<String, MetaValue> {
        &self.file.metadata
    }

    /// The `config.json` HF transformers would write for this model.
    pub fn config_json(&self) -> Value {
        let hp = &self.hp;
        let token_id = |key: &str| self.token_id(key).map_or(Value::Null, |id| json!(id));
        let mut rope = json!({"rope_theta": hp.rope_theta, "rope_type": "default"});
        let scaling = hp.rope_scaling.as_ref().map_or(Value::Null, RopeScaling::to_json);
        if let (Value::Object(r), Value::Object(s)) = (&mut rope, &scaling) {
            r.extend(s.clone());
        }
        let mut config = json!({
            "architectures": [self.arch.hf_class()],
            "model_type": self.arch.gguf_name(),
            "hidden_size": hp.hidden,
            "intermediate_size": hp.intermediate,
            "num_hidden_layers": hp.layers,
            "num_attention_heads": hp.heads,
            "num_key_value_heads": hp.kv_heads,
            "head_dim": hp.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": hp.rms_norm_eps,
            // Both spellings: transformers 5 reads rope_parameters, older versions rope_theta.
            "rope_theta": hp.rope_theta,
            "rope_scaling": scaling,
            "rope_parameters": rope,
            "max_position_embeddings": hp.context,
            "vocab_size": hp.vocab,
            "tie_word_embeddings": !self.by_hf_name.contains_key("lm_head.weight"),
            "attention_bias": self.by_hf_name.contains_key("model.layers.0.self_attn.q_proj.bias"),
            "attention_dropout": 0.0,
            "mlp_bias": false,
            "initializer_range": 0.02,
            "use_cache": true,
            "dtype": "float32",
            "bos_token_id": token_id("tokenizer.ggml.bos_token_id"),
            "eos_token_id": token_id("tokenizer.ggml.eos_token_id"),
            "pad_token_id": token_id("tokenizer.ggml.padding_token_id"),
        });
        if self.arch == Architecture::Qwen2 {
            config["use_sliding_window"] = json!(false);
        }
        config
    }

    /// HF-order shape of a tensor, without decoding it.
    pub fn tensor_shape(&self, hf_name: &str) -> Option<Vec<usize>> {
        self.by_hf_name.get(hf_name).map(|&i| hf_shape(&self.file.tensors[i]))
    }

    /// Decodes one tensor to f32 in HF layout: (HF shape, row-major data).
    pub fn load_tensor(&self, hf_name: &str) -> Result<(Vec<usize>, Vec<f32>), GgufError> {
        let Some(&index) = self.by_hf_name.get(hf_name) else {
            return Err(self.not_found(hf_name));
        };
        let info = &self.file.tensors[index];
        let invalid = |what: String| GgufError::InvalidTensor { path: self.file.path.clone(), tensor: info.name.clone(), what };
        let ty = self.decodable_type(info)?;
        let bytes = self.file.tensor_bytes(info).ok_or_else(|| invalid("data outside the file".into()))?;
        let n = usize::try_from(info.n_elements()).map_err(|_| invalid("too many elements".into()))?;
        let mut data = vec![0f32; n];
        dequantize(ty, bytes, &mut data);
        let shape = hf_shape(info);

        if let Some(heads) = rotary_heads(self.arch, hf_name, self.hp.heads, self.hp.kv_heads) {
            let rows = shape.first().copied().unwrap_or(0);
            data = rotary_rows(&data, rows, heads, Rows::ToHf)
                .ok_or_else(|| invalid(format!("{rows} rows cannot be split into {heads} heads of rotary pairs")))?;
        }
        Ok((shape, data))
    }

    /// The matrix `hf_name`'s format when its type is one the frozen kernels decode (read from
    /// the directory: no tensor data).
    pub fn quantized_format(&self, hf_name: &str) -> Option<QuantFormat> {
        let info = &self.file.tensors[*self.by_hf_name.get(hf_name)?];
        match (GgmlType::from_id(info.type_id), hf_shape(info).as_slice()) {
            (Some(ty), &[rows, cols]) => QuantFormat::new(ty, rows, cols),
            _ => None,
        }
    }

    /// A matrix's blocks as the file stores them, rows in HF order, when its type is one the frozen
    /// kernels decode (`kernels::frozen::QuantFormat`); `None` for any other type or rank.
    pub fn quantized_matrix(&self, hf_name: &str, device: &burn::tensor::Device) -> Result<Option<QuantMatrix>, GgufError> {
        let Some(&index) = self.by_hf_name.get(hf_name) else {
            return Err(self.not_found(hf_name));
        };
        let info = &self.file.tensors[index];
        let Some(format) = self.quantized_format(hf_name) else { return Ok(None) };
        let invalid = |what: String| GgufError::InvalidTensor { path: self.file.path.clone(), tensor: info.name.clone(), what };
        let bytes = self.file.tensor_bytes(info).ok_or_else(|| invalid("data outside the file".into()))?;
        if bytes.len() != format.bytes() {
            return Err(invalid(format!("{} bytes where a {format:?} takes {}", bytes.len(), format.bytes())));
        }
        // Finite values, as `load_tensor`'s are checked, decoded a row at a time.
        let mut row = vec![0f32; format.cols];
        for (r, row_bytes) in bytes.chunks(format.row_bytes()).enumerate() {
            dequantize(format.ty, row_bytes, &mut row);
            if let Some(c) = row.iter().position(|v| !v.is_finite()) {
                return Err(invalid(format!("value #{} is {}: the weights must be finite numbers", r * format.cols + c, row[c])));
            }
        }
        let matrix = match rotary_heads(self.arch, hf_name, self.hp.heads, self.hp.kv_heads) {
            // Whole rows move, so their blocks move with them.
            Some(heads) => rotary_rows(bytes, format.rows, heads, Rows::ToHf)
                .ok_or_else(|| invalid(format!("{} rows cannot be split into {heads} heads of rotary pairs", format.rows)))
                .map(|rows| QuantMatrix::new(format, &rows, device))?,
            None => QuantMatrix::new(format, bytes, device),
        };
        Ok(Some(matrix))
    }

    /// Every loadable tensor as (HF name, HF shape, data), decoded one at a time.
    pub fn tensors(&self) -> impl Iterator<Item = Result<(String, Vec<usize>, Vec<f32>), GgufError>> + '_ {
        self.mapped.iter().map(|(name, _)| self.load_tensor(name).map(|(shape, data)| (name.clone(), shape, data)))
    }

    /// The tokenizer, rebuilt from `tokenizer.ggml.*` metadata.
    pub fn tokenizer(&self) -> Result<tokenizers::Tokenizer, GgufError> {
        let doc = tokenizer::tokenizer_json(&self.file)?;
        doc.to_string().parse().map_err(|e| GgufError::Tokenizer {
            path: self.file.path.clone(),
            what: format!("tokenizers rejected the rebuilt tokenizer.json: {e}"),
        })
    }

    /// The tokenizer as tokenizer.json text (pretty, canonical), to save next to a model.
    pub fn tokenizer_json(&self) -> Result<String, GgufError> {
        self.tokenizer()?
            .to_string(true)
            .map_err(|e| GgufError::Tokenizer { path: self.file.path.clone(), what: format!("cannot serialize: {e}") })
    }

    /// The Jinja chat template (`tokenizer.chat_template`), if the file carries one.
    pub fn chat_template(&self) -> Option<&str> {
        self.file.get("tokenizer.chat_template").and_then(MetaValue::as_str)
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.token_id("tokenizer.ggml.bos_token_id")
    }

    pub fn eos_token_id(&self) -> Option<u32> {
        self.token_id("tokenizer.ggml.eos_token_id")
    }

    pub fn summary(&self) -> GgufSummary {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for t in &self.file.tensors {
            *counts.entry(dequant::type_name(t.type_id)).or_default() += 1;
        }
        let mut tensor_types: Vec<(String, usize)> = counts.into_iter().collect();
        tensor_types.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        GgufSummary {
            path: self.file.path.clone(),
            gguf_version: self.file.version,
            architecture: self.arch,
            name: self.file.get("general.name").and_then(MetaValue::as_str).map(str::to_string),
            parameter_count: self.mapped.iter().map(|&(_, i)| self.file.tensors[i].n_elements()).sum(),
            tensor_types,
            unmapped_tensors: (self.file.tensors.iter()).filter(|t| hf_name(&t.name).is_none()).map(|t| t.name.clone()).collect(),
            tokenizer_model: self.file.get("tokenizer.ggml.model").and_then(MetaValue::as_str).map(str::to_string),
            context_length: self.hp.context,
        }
    }

    /// The type of a tensor, or the error loading it would give when it is not one we decode.
    fn decodable_type(&self, info: &TensorInfo) -> Result<GgmlType, GgufError> {
        GgmlType::from_id(info.type_id).ok_or_else(|| GgufError::UnsupportedTensorType {
            path: self.file.path.clone(),
            tensor: info.name.clone(),
            ty: dequant::type_name(info.type_id),
            supported: GgmlType::SUPPORTED.map(GgmlType::name).join(", "),
        })
    }

    /// Whether every tensor the model loads has a type we decode, judged from the directory alone.
    fn check_tensor_types(&self) -> Result<(), GgufError> {
        self.mapped.iter().try_for_each(|&(_, i)| self.decodable_type(&self.file.tensors[i]).map(drop))
    }

    fn token_id(&self, key: &str) -> Option<u32> {
        self.file.get(key).and_then(MetaValue::as_i64).and_then(|v| u32::try_from(v).ok())
    }

    fn not_found(&self, name: &str) -> GgufError {
        let hint = if let Some(hf) = self.file.by_name.get(name).and_then(|_| hf_name(name)) {
            format!(" (that is the GGUF name; ask for the Hugging Face name '{hf}')")
        } else if name == "lm_head.weight" {
            " (the embeddings are tied: lm_head is model.embed_tokens.weight)".to_string()
        } else {
            String::new()
        };
        GgufError::TensorNotFound { path: self.file.path.clone(), name: name.to_string(), hint }
    }
}

fn read_hparams(f: &GgufFile, arch: Architecture, tensors: &HashMap<String, usize>) -> Result<HParams, GgufError> {
    let key = |k: &str| format!("{}.{k}", arch.gguf_name());
    let invalid = |k: &str, what: String| GgufError::InvalidMetadata { path: f.path.clone(), key: key(k), what };
    let hidden = f.usize(&key("embedding_length"))?;
    let heads = f.usize(&key("attention.head_count"))?;
    let kv_heads = f.opt_usize(&key("attention.head_count_kv"))?.unwrap_or(heads);
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(invalid("attention.head_count_kv", format!("{kv_heads} key/value heads do not divide {heads} attention heads")));
    }
    let head_dim = match f.opt_usize(&key("attention.key_length"))? {
        Some(d) => d,
        None if hidden.is_multiple_of(heads) => hidden / heads,
        None => {
            return Err(invalid("embedding_length", format!("{hidden} is not a multiple of {heads} heads")));
        }
    };
    // A norm epsilon or RoPE base that is not a positive number turns activations into NaN (and
    // a NaN would reach config.json as null, read back as the default).
    let positive = |k: &str, value: f64| {
        if value > 0.0 && value.is_finite() { Ok(value) } else { Err(invalid(k, format!("{value} must be a positive finite number"))) }
    };
    let rope_theta = positive("rope.freq_base", f.opt_f64(&key("rope.freq_base"))?.unwrap_or(10_000.0))?;
    let rms_norm_eps = positive("attention.layer_norm_rms_epsilon", f.f64(&key("attention.layer_norm_rms_epsilon"))?)?;
    let n_tokens = f.get("tokenizer.ggml.tokens").and_then(MetaValue::as_array).map(<[_]>::len);
    let vocab = match (n_tokens, f.opt_usize(&key("vocab_size"))?) {
        (Some(n), _) | (None, Some(n)) => n,
        (None, None) => tensors.get("model.embed_tokens.weight").and_then(|&i| f.tensors[i].dims.get(1).copied()).map_or(0, |d| d as usize),
    };
    // Generation and training look these ids up in the embedding, which has a row per token.
    for k in
        ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.padding_token_id", "tokenizer.ggml.unknown_token_id"]
    {
        if let Some(id) = f.get(k).and_then(MetaValue::as_i64).filter(|&id| id >= 0 && id as u64 >= vocab as u64) {
            let what = format!("token id {id} is outside the vocabulary ({vocab} tokens)");
            return Err(GgufError::InvalidMetadata { path: f.path.clone(), key: k.to_string(), what });
        }
    }
    Ok(HParams {
        hidden,
        intermediate: f.usize(&key("feed_forward_length"))?,
        layers: f.usize(&key("block_count"))?,
        heads,
        kv_heads,
        head_dim,
        rms_norm_eps,
        rope_theta,
        rope_scaling: rope_scaling(f, &key, rope_theta, head_dim)?,
        context: f.usize(&key("context_length"))?,
        vocab,
    })
}

fn rope_scaling(f: &GgufFile, key: &dyn Fn(&str) -> String, theta: f64, head_dim: usize) -> Result<Option<RopeScaling>, GgufError> {
    let unsupported = |what: String| GgufError::Unsupported { path: f.path.clone(), what };
    if let Some(&i) = f.by_name.get(ROPE_FREQS) {
        return llama3_rope_scaling(f, &f.tensors[i], theta, head_dim).map(Some);
    }
    let Some(kind) = f.opt_str(&key("rope.scaling.type"))? else {
        return Ok(None);
    };
    let factor = || f.f64(&key("rope.scaling.factor"));
    Ok(match kind {
        "none" => None,
        "linear" => Some(RopeScaling::Linear { factor: factor()? }),
        "yarn" => Some(RopeScaling::Yarn { factor: factor()?, original_context: f.usize(&key("rope.scaling.original_context_length"))? }),
        other => {
            return Err(unsupported(format!("RoPE scaling '{other}' (supported: linear, yarn)")));
        }
    })
}

/// Recovers HF's "llama3" RoPE parameters from `rope_freqs.weight`. The factor is the largest
/// divisor; every Llama 3.x release used frequency factors 1 and 4 over an original context of
/// 8192, so those are assumed and checked: the divisors recomputed from them (as llama.cpp's
/// converter does) must reproduce the tensor.
fn llama3_rope_scaling(f: &GgufFile, info: &TensorInfo, theta: f64, head_dim: usize) -> Result<RopeScaling, GgufError> {
    let unsupported = |what: String| GgufError::Unsupported { path: f.path.clone(), what };
    let (Some(ty), Some(bytes)) = (GgmlType::from_id(info.type_id), f.tensor_bytes(info)) else {
        let ty = dequant::type_name(info.type_id);
        return Err(unsupported(format!("{ROPE_FREQS} of type {ty}")));
    };
    let mut stored = vec![0f32; bytes.len() / ty.type_size() * ty.block_size()];
    dequantize(ty, bytes, &mut stored);

    let (low, high, original) = (1.0, 4.0, 8192usize);
    let factor = stored.iter().copied().fold(1.0f32, f32::max) as f64;
    let divisor = |i: usize| {
        let wavelen = 2.0 * std::f64::consts::PI * theta.powf(2.0 * i as f64 / head_dim as f64);
        if wavelen < original as f64 / high {
            1.0
        } else if wavelen > original as f64 / low {
            factor
        } else {
            let smooth = (original as f64 / wavelen - low) / (high - low);
            1.0 / ((1.0 - smooth) / factor + smooth)
        }
    };
    let matches =
        stored.len() == head_dim / 2 && (stored.iter().enumerate()).all(|(i, &s)| (s as f64 - divisor(i)).abs() <= 1e-4 * divisor(i));
    if !matches {
        return Err(unsupported(format!(
            "{ROPE_FREQS} that is not Llama 3's RoPE scaling (factor {factor}, frequency factors \
             {low} and {high}, original context {original}, head size {head_dim})"
        )));
    }
    Ok(RopeScaling::Llama3 { factor, low_freq_factor: low, high_freq_factor: high, original_context: original })
}

/// Per-layer tensors: llama.cpp's name and HF transformers' (Llama/Qwen2 layout).
const LAYER_PARTS: [(&str, &str); 9] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
    ("attn_norm", "input_layernorm"),
    ("ffn_norm", "post_attention_layernorm"),
];

/// Whole-model tensors: llama.cpp's name and HF transformers'.
const MODEL_PARTS: [(&str, &str); 3] = [("token_embd", "model.embed_tokens"), ("output_norm", "model.norm"), ("output", "lm_head")];

/// llama.cpp tensor name -> HF transformers parameter name (Llama/Qwen2 layout).
fn hf_name(gguf: &str) -> Option<String> {
    let (base, kind) = gguf.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let hf_base = match MODEL_PARTS.iter().find(|(g, _)| *g == base) {
        Some((_, hf)) => hf.to_string(),
        None => {
            let (layer, part) = base.strip_prefix("blk.")?.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let (_, hf) = LAYER_PARTS.iter().find(|(g, _)| *g == part)?;
            format!("model.layers.{layer}.{hf}")
        }
    };
    Some(format!("{hf_base}.{kind}"))
}

/// HF transformers parameter name -> llama.cpp tensor name: the inverse of [`hf_name`].
fn gguf_name(hf: &str) -> Option<String> {
    let (base, kind) = hf.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let gguf_base = match MODEL_PARTS.iter().find(|(_, h)| *h == base) {
        Some((g, _)) => g.to_string(),
        None => {
            let (layer, part) = base.strip_prefix("model.layers.")?.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let (g, _) = LAYER_PARTS.iter().find(|(_, h)| *h == part)?;
            format!("blk.{layer}.{g}")
        }
    };
    Some(format!("{gguf_base}.{kind}"))
}

fn hf_shape(info: &TensorInfo) -> Vec<usize> {
    // Tensor sizes were checked against the file length at open, so each dim fits in usize.
    info.dims.iter().rev().map(|&d| d as usize).collect()
}

/// `values`, a `[rows, cols]` matrix, quantized to `ty` as GGUF export writes it, when the frozen
/// kernels decode the type export picks for its rows: `source` storage without a file (random
/// weights in benchmarks, tests).
pub fn quantized(values: &[f32], [rows, cols]: [usize; 2], ty: GgmlType, device: &burn::tensor::Device) -> Option<QuantMatrix> {
    let encoded = write::TensorData::encode(String::new(), vec![rows, cols], values, ty);
    QuantFormat::new(encoded.ty, rows, cols).map(|format| QuantMatrix::new(format, &encoded.bytes, device))
}

/// Whether a path names a GGUF file by its extension.
pub fn has_gguf_name(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// The heads of the tensor `hf_name` whose rows llama.cpp stores in its rotary order: Llama's
/// q_proj (`heads`) and k_proj (`kv_heads`); Qwen2's converter keeps HF's order.
fn rotary_heads(arch: Architecture, hf_name: &str, heads: usize, kv_heads: usize) -> Option<usize> {
    match arch {
        Architecture::Llama if hf_name.contains(".self_attn.q_proj.") => Some(heads),
        Architecture::Llama if hf_name.contains(".self_attn.k_proj.") => Some(kv_heads),
        _ => None,
    }
}

/// Which way [`rotary_rows`] reorders.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rows {
    /// GGUF's interleaved rotary pairs to HF's halves (reading).
    ToHf,
    /// HF's halves to GGUF's interleaved pairs (writing).
    ToGguf,
}

/// llama.cpp's q/k row permutation, or its inverse. The converter computes, per head of
/// `head_dim` rows, `w.reshape(n_head, 2, head_dim / 2, cols).swapaxes(1, 2)`: GGUF row `2*i + j`
/// of a head is HF row `j * head_dim/2 + i`. None when the rows do not split into heads of pairs.
fn rotary_rows<T: Copy + Default>(data: &[T], rows: usize, heads: usize, way: Rows) -> Option<Vec<T>> {
    if rows == 0 || heads == 0 || !rows.is_multiple_of(2 * heads) || !data.len().is_multiple_of(rows) {
        return None;
    }
    let cols = data.len() / rows;
    let head_dim = rows / heads;
    let half = head_dim / 2;
    let mut out = vec![T::default(); data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let gguf = (h * head_dim + 2 * i + j) * cols;
                let hf = (h * head_dim + j * half + i) * cols;
                let (src, dst) = if way == Rows::ToHf { (gguf, hf) } else { (hf, gguf) };
                out[dst..dst + cols].copy_from_slice(&data[src..src + cols]);
            }
        }
    }
    Some(out)
}
