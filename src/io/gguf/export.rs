//! A model saved as one GGUF file for llama.cpp, Ollama and LM Studio (the Llama family and
//! Qwen2): hyper-parameters, the tokenizer, special tokens and the chat template in llama.cpp's
//! metadata keys, tensors under llama.cpp's names in f32, f16, Q8_0 or Q4_K_M, and an Ollama Modelfile
//! beside it.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::file::MetaValue;
use super::tokenizer::{BYTE_PRE_NAMES, byte_pre};
use super::write::{Precision, TensorData, write_gguf};
use super::{Architecture, GgmlType, GgufModel, Rows, gguf_name, has_gguf_name, rotary_heads, rotary_rows};
use crate::error::{Error, Result};
use crate::io::atomic::{self, Existing};
use crate::io::{LoadedModel, ModelSource};
use crate::model::config::{LlamaConfig, RopeScaling};
use crate::model::{Linears, Model, Parameters};

/// `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
const TYPE_NORMAL: i32 = 1;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_UNUSED: i32 = 5;

/// What was written.
#[derive(Debug, Clone)]
pub struct Exported {
    pub gguf: PathBuf,
    /// `ollama create NAME -f <this>` makes it an Ollama model.
    pub modelfile: PathBuf,
    pub tensors: usize,
    pub bytes: u64,
}

/// Writes `loaded` to `path` (a .gguf file) and an Ollama Modelfile beside it
/// (`<stem>.Modelfile`); either existing file is replaced only when `existing` says so, and
/// never the file the model was loaded from.
pub fn save_gguf(loaded: &LoadedModel, path: &Path, precision: Precision, existing: Existing) -> Result<Exported> {
    let Model::Llama(llama) = &loaded.model else {
        return Err(Error::Unsupported {
            path: path.into(),
            what: format!("GGUF export of a {} model", loaded.model.info().model_type),
            supported: "the Llama family (Llama, SmolLM, Mistral, ...) and Qwen2; save other models as an HF folder".into(),
        });
    };
    let config = &llama.config;
    let arch = match config.model_type.as_str() {
        "qwen2" => Architecture::Qwen2,
        _ => Architecture::Llama,
    };
    if !has_gguf_name(path) {
        return Err(Error::invalid(path, "a GGUF file's name must end in .gguf"));
    }
    crate::io::export::refuse_replacing_source(loaded, path)?;
    let modelfile = path.with_extension("Modelfile");
    for target in [path, modelfile.as_path()] {
        if existing == Existing::Refuse && target.exists() {
            return Err(Error::Exists { path: target.into() });
        }
    }

    let mut metadata = hyper_parameters(config, arch, path, precision);
    metadata.extend(tokenizer_metadata(loaded, config, path)?);
    let tensors = tensors(loaded, config, arch, precision, path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    atomic::write_file_with(path, |out| write_gguf(out, &metadata, &tensors))?;
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    atomic::write_file(&modelfile, ollama_modelfile(&file_name, loaded.chat_template()).as_bytes())?;
    let bytes = std::fs::metadata(path).map_err(|e| Error::io(path, e))?.len();
    Ok(Exported { gguf: path.into(), modelfile, tensors: tensors.len(), bytes })
}

fn kv(key: impl Into<String>, value: MetaValue) -> (String, MetaValue) {
    (key.into(), value)
}

fn string(s: impl Into<String>) -> MetaValue {
    MetaValue::String(s.into())
}

fn u32_of(n: usize) -> MetaValue {
    MetaValue::U32(n as u32)
}

/// `general.*` and `<arch>.*`, as llama.cpp's converter writes them.
fn hyper_parameters(c: &LlamaConfig, arch: Architecture, path: &Path, precision: Precision) -> Vec<(String, MetaValue)> {
    let a = arch.gguf_name();
    let key = |k: &str| format!("{a}.{k}");
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let mut out = vec![
        kv("general.architecture", string(a)),
        kv("general.name", string(name)),
        kv("general.file_type", MetaValue::U32(precision.file_type())),
        kv("general.quantization_version", MetaValue::U32(2)),
        kv(key("context_length"), u32_of(c.max_position_embeddings)),
        kv(key("embedding_length"), u32_of(c.hidden_size)),
        kv(key("block_count"), u32_of(c.num_hidden_layers)),
        kv(key("feed_forward_length"), u32_of(c.intermediate_size)),
        kv(key("attention.head_count"), u32_of(c.num_attention_heads)),
        kv(key("attention.head_count_kv"), u32_of(c.num_key_value_heads)),
        kv(key("attention.layer_norm_rms_epsilon"), MetaValue::F32(c.rms_norm_eps as f32)),
        kv(key("rope.freq_base"), MetaValue::F32(c.rope.theta as f32)),
        kv(key("rope.dimension_count"), u32_of(c.head_dim)),
        kv(key("vocab_size"), u32_of(c.vocab_size)),
    ];
    if c.head_dim * c.num_attention_heads != c.hidden_size {
        out.push(kv(key("attention.key_length"), u32_of(c.head_dim)));
        out.push(kv(key("attention.value_length"), u32_of(c.head_dim)));
    }
    match c.rope.scaling {
        RopeScaling::None => {}
        RopeScaling::Linear { factor } => {
            out.push(kv(key("rope.scaling.type"), string("linear")));
            out.push(kv(key("rope.scaling.factor"), MetaValue::F32(factor as f32)));
        }
        // Written as the rope_freqs tensor (see `tensors`).
        RopeScaling::Llama3 { .. } => {}
    }
    out
}

/// `tokenizer.*`: copied from the GGUF file the model came from (exactly what llama.cpp read
/// before), else rebuilt from the HF tokenizer (byte-level BPE only).
fn tokenizer_metadata(loaded: &LoadedModel, c: &LlamaConfig, path: &Path) -> Result<Vec<(String, MetaValue)>> {
    let mut out = match &loaded.source {
        ModelSource::Gguf(source) => {
            let gguf = GgufModel::open(source)?;
            gguf.metadata().iter().filter(|(k, _)| k.starts_with("tokenizer.")).map(|(k, v)| (k.clone(), v.clone())).collect()
        }
        ModelSource::HfFolder(_) => hf_tokenizer_metadata(&loaded.tokenizer, path)?,
    };
    let mut set = |key: &str, value: Option<MetaValue>| {
        out.retain(|(k, _)| k != key);
        out.extend(value.map(|v| kv(key, v)));
    };
    // The model's own ids and template win over whatever the tokenizer file said.
    set("tokenizer.ggml.bos_token_id", c.bos_token_id.map(MetaValue::U32));
    set("tokenizer.ggml.eos_token_id", c.eos_token_ids.first().copied().map(MetaValue::U32));
    set("tokenizer.ggml.padding_token_id", c.pad_token_id.map(MetaValue::U32));
    set("tokenizer.chat_template", loaded.chat_template().map(string));
    Ok(out)
}

fn hf_tokenizer_metadata(tokenizer: &tokenizers::Tokenizer, path: &Path) -> Result<Vec<(String, MetaValue)>> {
    let unsupported = |what: String| Error::Unsupported {
        path: path.into(),
        what,
        supported: "byte-level BPE tokenizers (SmolLM, Llama 3, Qwen2, GPT-2 style)".into(),
    };
    let doc: Value =
        serde_json::from_str(&tokenizer.to_string(false).map_err(|e| Error::Other(format!("cannot serialise the tokenizer: {e}")))?)
            .map_err(|e| Error::Other(format!("cannot read the tokenizer back: {e}")))?;
    let model = &doc["model"];
    if model["type"] != "BPE" || model["byte_fallback"] == true {
        return Err(unsupported(format!("GGUF export of a {} tokenizer", model["type"].as_str().unwrap_or("unknown"))));
    }
    let pre = byte_pre_name(&doc["pre_tokenizer"]).ok_or_else(|| unsupported("GGUF export of this tokenizer's pre-tokenizer".into()))?;

    // Every id gets a piece: the vocabulary, the added tokens, and llama.cpp's filler for gaps.
    let vocab = model["vocab"].as_object().map(|v| v.iter().filter_map(|(t, id)| Some((id.as_u64()? as usize, t.clone(), TYPE_NORMAL))));
    let added = doc["added_tokens"].as_array().map(|a| {
        a.iter().filter_map(|t| {
            let kind = if t["special"] == true { TYPE_CONTROL } else { TYPE_USER_DEFINED };
            Some((t["id"].as_u64()? as usize, t["content"].as_str()?.to_string(), kind))
        })
    });
    let entries: Vec<(usize, String, i32)> = vocab.into_iter().flatten().chain(added.into_iter().flatten()).collect();
    let n = entries.iter().map(|e| e.0 + 1).max().unwrap_or(0);
    let mut tokens: Vec<(String, i32)> = (0..n).map(|i| (format!("[PAD{i}]"), TYPE_UNUSED)).collect();
    for (id, piece, kind) in entries {
        tokens[id] = (piece, kind);
    }
    // tokenizers writes merges as pairs (older files as "a b" strings); GGUF keeps "a b".
    let merges: Vec<MetaValue> = model["merges"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|pair| match pair {
                    Value::String(s) => Some(s.clone()),
                    Value::Array(p) => Some(format!("{} {}", p.first()?.as_str()?, p.get(1)?.as_str()?)),
                    _ => None,
                })
                .map(string)
                .collect()
        })
        .unwrap_or_default();
    Ok(vec![
        kv("tokenizer.ggml.model", string("gpt2")),
        kv("tokenizer.ggml.pre", string(pre)),
        kv("tokenizer.ggml.tokens", MetaValue::Array(tokens.iter().map(|(t, _)| string(t.clone())).collect())),
        kv("tokenizer.ggml.token_type", MetaValue::Array(tokens.iter().map(|&(_, k)| MetaValue::I32(k)).collect())),
        kv("tokenizer.ggml.merges", MetaValue::Array(merges)),
        kv("tokenizer.ggml.add_bos_token", MetaValue::Bool(adds_bos(&doc["post_processor"]))),
    ])
}

/// The llama.cpp pre-tokenizer family whose HF pre-tokenizer is `hf`'s.
fn byte_pre_name(hf: &Value) -> Option<&'static str> {
    // Both sides go through tokenizers' own types, so defaults and field order do not matter.
    let canonical =
        |v: &Value| serde_json::from_value::<tokenizers::PreTokenizerWrapper>(v.clone()).ok().and_then(|p| serde_json::to_value(p).ok());
    let target = canonical(hf)?;
    BYTE_PRE_NAMES.into_iter().find(|name| byte_pre(name).is_some_and(|p| canonical(&p.pre_tokenizer).as_ref() == Some(&target)))
}

/// Whether the post-processor puts a special token before the text (Llama 3's BOS).
fn adds_bos(post: &Value) -> bool {
    let template = |p: &Value| p["type"] == "TemplateProcessing" && p["single"][0].get("SpecialToken").is_some();
    template(post) || post["processors"].as_array().is_some_and(|ps| ps.iter().any(template))
}

/// The tensors under llama.cpp's names: q/k rows in its rotary order (see `rotary_heads`), 1-D tensors in f32 as llama.cpp keeps them, Llama 3's RoPE scaling as
/// `rope_freqs.weight`.
fn tensors(loaded: &LoadedModel, c: &LlamaConfig, arch: Architecture, precision: Precision, path: &Path) -> Result<Vec<TensorData>> {
    let mut out = Vec::new();
    let mut failed = None;
    loaded.model.merged().visit(&mut |name, p| {
        let (shape, mut values): (Vec<usize>, Vec<f32>) = (p.shape(), p.to_vec());
        let Some(gguf) = gguf_name(name) else {
            failed.get_or_insert_with(|| Error::tensor(path, name, "has no llama.cpp name"));
            return;
        };
        if let Some(heads) = rotary_heads(arch, name, c.num_attention_heads, c.num_key_value_heads) {
            match rotary_rows(&values, shape[0], heads, Rows::ToGguf) {
                Some(v) => values = v,
                None => {
                    failed.get_or_insert_with(|| Error::tensor(path, name, format!("{} rows do not split into {heads} heads", shape[0])));
                    return;
                }
            }
        }
        let ty = if shape.len() < 2 { GgmlType::F32 } else { precision.matrix_type(&gguf, c.num_hidden_layers, c.tie_word_embeddings) };
        out.push(TensorData::encode(gguf, shape, &values, ty));
    });
    if let Some(e) = failed {
        return Err(e);
    }
    if let RopeScaling::Llama3 { .. } = c.rope.scaling {
        // llama.cpp divides each unscaled frequency by these.
        let d = c.head_dim as f64;
        let divisors: Vec<f32> =
            c.rope.inv_freq(c.head_dim).iter().enumerate().map(|(i, f)| (c.rope.theta.powf(-2.0 * i as f64 / d) / f) as f32).collect();
        out.push(TensorData::encode(super::ROPE_FREQS.into(), vec![divisors.len()], &divisors, GgmlType::F32));
    }
    Ok(out)
}

/// An Ollama Modelfile for `file_name` (beside it). Ollama reads the chat template from the GGUF
/// too, but its own Go template is what it uses to build prompts: known families get theirs.
fn ollama_modelfile(file_name: &str, chat_template: Option<&str>) -> String {
    let mut out = format!("# ollama create my-model -f <this file>\nFROM ./{file_name}\n");
    let family = chat_template.and_then(|t| {
        if t.contains("<|im_start|>") {
            Some((CHATML_TEMPLATE, ["<|im_start|>", "<|im_end|>"]))
        } else if t.contains("<|start_header_id|>") {
            Some((LLAMA3_TEMPLATE, ["<|start_header_id|>", "<|eot_id|>"]))
        } else {
            None
        }
    });
    match family {
        Some((template, stops)) => {
            out += &format!("TEMPLATE \"\"\"{template}\"\"\"\n");
            for stop in stops {
                out += &format!("PARAMETER stop \"{stop}\"\n");
            }
        }
        None => out += "# No TEMPLATE: Ollama takes the chat template from the GGUF file's metadata.\n",
    }
    out
}

const CHATML_TEMPLATE: &str = "{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
";

const LLAMA3_TEMPLATE: &str = "{{- if .System }}<|start_header_id|>system<|end_header_id|>

{{ .System }}<|eot_id|>{{ end }}{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>

";
