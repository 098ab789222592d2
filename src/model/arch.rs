//! The architectures this build runs, behind the one model type the engine trains, evaluates and
//! saves. Each architecture keeps its own file and config struct; this enum only dispatches.

use burn::tensor::{Device, Int, Tensor};
use serde_json::Value;

use super::bloom::{Bloom, BloomConfig};
use super::cache::KvCache;
use super::config::LlamaConfig;
use super::linear::{Linear, Linears};
use super::llama::{Llama, TensorSource};
use super::opt::{Opt, OptConfig};
use super::params::{ParamMut, ParamRef, Parameters};
use crate::error::{Error, Result};
use crate::profile::{OpSpec, TensorRole};

/// `model_type`s this build runs.
pub const SUPPORTED_MODEL_TYPES: &str = "llama, qwen2 (Llama family), opt, bloom";

/// Boxed: the architectures' structs differ in size by kilobytes.
#[derive(Clone, Debug)]
pub enum Model {
    Llama(Box<Llama>),
    Opt(Box<Opt>),
    Bloom(Box<Bloom>),
}

/// What the engine and the app need to know of any architecture's config.json.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Longest sequence the position encoding covers; `None` for ALiBi, which has no table.
    pub context_length: Option<usize>,
    pub tied_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
}

macro_rules! each {
    ($model:expr, $m:ident => $body:expr) => {
        match $model {
            Model::Llama($m) => $body,
            Model::Opt($m) => $body,
            Model::Bloom($m) => $body,
        }
    };
}

/// `model_type`, or the one implied by `architectures[0]` (older files lack the former).
fn model_type(raw: &Value) -> String {
    if let Some(t) = raw.get("model_type").and_then(Value::as_str) {
        return t.to_string();
    }
    let arch = raw.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).unwrap_or_default();
    match arch {
        "LlamaForCausalLM" | "MistralForCausalLM" => "llama",
        "Qwen2ForCausalLM" => "qwen2",
        "OPTForCausalLM" => "opt",
        "BloomForCausalLM" => "bloom",
        other => other,
    }
    .to_string()
}

impl Model {
    /// Parses `raw` (a config.json; `origin` names it in errors) and builds the architecture it
    /// names, asking `source` for every parameter by HF name.
    pub fn load(raw: Value, origin: &str, device: &Device, source: &mut TensorSource<'_>) -> Result<Self> {
        Ok(match model_type(&raw).as_str() {
            "llama" | "qwen2" => Self::Llama(Box::new(Llama::load(LlamaConfig::from_value(raw, origin)?, device, source)?)),
            "opt" => Self::Opt(Box::new(Opt::load(OptConfig::from_value(raw, origin)?, device, source)?)),
            "bloom" => Self::Bloom(Box::new(Bloom::load(BloomConfig::from_value(raw, origin)?, device, source)?)),
            other => {
                return Err(Error::Unsupported {
                    path: origin.into(),
                    what: format!("model_type {other:?}"),
                    supported: SUPPORTED_MODEL_TYPES.into(),
                });
            }
        })
    }

    /// Logits `[B, S, V]` for token ids `[B, S]`, with the additive mask of `attention_mask`;
    /// with a cache, positions continue after the cached ones.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Option<&Tensor<4>>, cache: Option<&mut KvCache>) -> Tensor<3> {
        each!(self, m => m.forward(ids, mask, cache))
    }

    /// The execution-ordered op graph the FLOPs profiler works on.
    pub fn op_graph(&self) -> Vec<OpSpec> {
        each!(self, m => m.op_graph())
    }

    pub fn device(&self) -> Device {
        each!(self, m => m.device())
    }

    /// The user's config.json, kept whole so a saved model carries every field it had.
    pub fn raw_config(&self) -> &Value {
        each!(self, m => &m.config.raw)
    }

    pub fn info(&self) -> ModelInfo {
        match self {
            Self::Llama(m) => {
                let c = &m.config;
                ModelInfo {
                    model_type: c.model_type.clone(),
                    vocab_size: c.vocab_size,
                    hidden_size: c.hidden_size,
                    layers: c.num_hidden_layers,
                    heads: c.num_attention_heads,
                    kv_heads: c.num_key_value_heads,
                    head_dim: c.head_dim,
                    context_length: Some(c.max_position_embeddings),
                    tied_embeddings: c.tie_word_embeddings,
                    bos_token_id: c.bos_token_id,
                    eos_token_ids: c.eos_token_ids.clone(),
                    pad_token_id: c.pad_token_id,
                }
            }
            Self::Opt(m) => {
                let c = &m.config;
                ModelInfo {
                    model_type: "opt".into(),
                    vocab_size: c.vocab_size,
                    hidden_size: c.hidden_size,
                    layers: c.num_hidden_layers,
                    heads: c.num_attention_heads,
                    kv_heads: c.num_attention_heads,
                    head_dim: c.head_dim(),
                    context_length: Some(c.max_position_embeddings),
                    tied_embeddings: c.tie_word_embeddings,
                    bos_token_id: c.bos_token_id,
                    eos_token_ids: c.eos_token_ids.clone(),
                    pad_token_id: c.pad_token_id,
                }
            }
            Self::Bloom(m) => {
                let c = &m.config;
                ModelInfo {
                    model_type: "bloom".into(),
                    vocab_size: c.vocab_size,
                    hidden_size: c.hidden_size,
                    layers: c.n_layer,
                    heads: c.n_head,
                    kv_heads: c.n_head,
                    head_dim: c.head_dim(),
                    context_length: None,
                    tied_embeddings: c.tie_word_embeddings,
                    bos_token_id: c.bos_token_id,
                    eos_token_ids: c.eos_token_ids.clone(),
                    pad_token_id: c.pad_token_id,
                }
            }
        }
    }

    /// The longest sequence the model can run at all: OPT's learned position table ends at
    /// `max_position_embeddings`; rotary (Llama) and ALiBi (BLOOM) positions have no hard end.
    pub fn position_limit(&self) -> Option<usize> {
        match self {
            Self::Opt(m) => Some(m.config.max_position_embeddings),
            Self::Llama(_) | Self::Bloom(_) => None,
        }
    }

    /// FT-top-k's tensors: every parameter of the last `k` blocks and of what follows them (the
    /// final norm, an untied head).
    pub fn top_layers(&self, k: usize) -> std::collections::BTreeSet<String> {
        let ops = self.op_graph();
        let first = self.info().layers.saturating_sub(k);
        let last_block_op = ops.iter().rposition(|op| op.layer.is_some()).unwrap_or(0);
        let params: std::collections::BTreeSet<String> = self.param_names().into_iter().collect();
        ops.iter()
            .enumerate()
            .filter(|(i, op)| op.layer.map_or(*i > last_block_op, |l| l >= first))
            .map(|(_, op)| op.name.clone())
            .filter(|name| params.contains(name))
            .collect()
    }

    /// Rows of one attention head in a weight of this role (head granularity): BLOOM's fused
    /// query_key_value keeps a head's q, k and v rows together.
    pub fn head_rows(&self, role: TensorRole) -> usize {
        let head_dim = self.info().head_dim;
        match (self, role) {
            (Self::Bloom(_), TensorRole::Qkv) => 3 * head_dim,
            _ => head_dim,
        }
    }
}

impl Parameters for Model {
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_>)) {
        each!(self, m => m.visit(f))
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        each!(self, m => m.visit_mut(f))
    }
}

impl Linears for Model {
    fn linears(&self) -> Vec<(String, &Linear)> {
        each!(self, m => m.linears())
    }

    fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        each!(self, m => m.linears_mut())
    }
}
