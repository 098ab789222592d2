//! The architectures this build runs, behind the one model type the engine trains, evaluates and
//! saves. Each architecture keeps its own file and config struct; this enum only dispatches.

use burn::tensor::{Device, Int, Tensor};
use serde_json::Value;

use super::attention::{Mask, attention_mask};
use super::bloom::{Bloom, BloomConfig};
use super::cache::KvCache;
use super::config::LlamaConfig;
use super::graph::{OpSpec, TensorRole};
use super::linear::vocab_logits;
use super::llama::Llama;
use super::loader::{Loader, TensorSource, WeightSource};
use super::loss::{causal_targets, head_cross_entropy};
use super::opt::{Opt, OptConfig};
use super::params::{ModuleMut, Parameters};
use super::t5::{T5, T5Config};
use crate::error::{Error, Result};

/// `model_type`s this build runs.
pub const SUPPORTED_MODEL_TYPES: &str = "llama, qwen2 (Llama family), opt, bloom, t5 (T5 v1.1, FLAN-T5)";

/// Boxed: the architectures' structs differ in size by kilobytes.
#[derive(Clone, Debug)]
pub enum Model {
    Llama(Box<Llama>),
    Opt(Box<Opt>),
    Bloom(Box<Bloom>),
    /// Encoder-decoder: trained on [`BatchInput::Seq2Seq`], generated from with `T5::encode`/`T5::decode`.
    T5(Box<T5>),
}

/// A training batch on the device, laid out for the kind of model it was made for
/// (`train::batch::DeviceBatch::new` lets the model decide).
#[derive(Clone, Debug)]
pub enum BatchInput {
    /// Prompt and target in one sequence, with the mask of `attention_mask` (causal, padding).
    Causal { ids: Tensor<2, Int>, mask: Mask },
    /// The prompt to the encoder (`padding` `[B, S]` row-major, 1 = real token), the target shifted
    /// right behind the decoder start token to the decoder.
    Seq2Seq { ids: Tensor<2, Int>, padding: Vec<u32>, decoder_ids: Tensor<2, Int> },
}

/// What the engine and the app need to know of any architecture's config.json.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Transformer blocks, of both stacks for an encoder-decoder model.
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Longest sequence the position encoding covers; `None` without a table (ALiBi, T5's relative buckets).
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
            Model::T5($m) => $body,
        }
    };
}

/// `model_type`, or the one implied by `architectures[0]` (older files lack the former); for an
/// architecture this build does not know, whatever the file names (the class, when no model_type).
pub fn model_type(raw: &Value) -> String {
    if let Some(t) = raw.get("model_type").and_then(Value::as_str) {
        return t.to_string();
    }
    let arch = raw.get("architectures").and_then(|a| a.get(0)).and_then(Value::as_str).unwrap_or_default();
    match arch {
        "LlamaForCausalLM" | "MistralForCausalLM" => "llama",
        "Qwen2ForCausalLM" => "qwen2",
        "OPTForCausalLM" => "opt",
        "BloomForCausalLM" => "bloom",
        "T5ForConditionalGeneration" => "t5",
        other => other,
    }
    .to_string()
}

/// A config.json parsed by the architecture it names: the one place that decides which
/// architectures this build runs, for loading and for judging a model before loading it.
enum ArchConfig {
    Llama(LlamaConfig),
    Opt(OptConfig),
    Bloom(BloomConfig),
    T5(T5Config),
}

impl ArchConfig {
    fn parse(raw: Value, origin: &str) -> Result<Self> {
        Ok(match model_type(&raw).as_str() {
            "llama" | "qwen2" => Self::Llama(LlamaConfig::from_value(raw, origin)?),
            "opt" => Self::Opt(OptConfig::from_value(raw, origin)?),
            "bloom" => Self::Bloom(BloomConfig::from_value(raw, origin)?),
            "t5" => {
                // T5Config checks `model_type` itself; older files name only the architecture.
                let mut raw = raw;
                if let Some(obj) = raw.as_object_mut() {
                    obj.entry("model_type").or_insert_with(|| "t5".into());
                }
                Self::T5(T5Config::from_value(raw, origin)?)
            }
            other => {
                return Err(Error::Unsupported {
                    path: origin.into(),
                    what: format!("model_type {other:?}"),
                    supported: SUPPORTED_MODEL_TYPES.into(),
                });
            }
        })
    }
}

/// Whether [`Model::load`] would accept this config.json (`origin` names it in the error): the
/// architecture and its hyper-parameters are checked, no weight is read.
pub fn check_config(raw: Value, origin: &str) -> Result<()> {
    ArchConfig::parse(raw, origin).map(drop)
}

/// The op graph of the model this config.json describes, without weights (`origin` names it in
/// errors): for planning and estimating a model too large to build here.
pub fn config_ops(raw: Value, origin: &str) -> Result<Vec<OpSpec>> {
    Ok(match ArchConfig::parse(raw, origin)? {
        ArchConfig::Llama(c) => super::llama::llama_ops(&c),
        ArchConfig::Opt(c) => super::opt::opt_ops(&c),
        ArchConfig::Bloom(c) => super::bloom::bloom_ops(&c),
        ArchConfig::T5(c) => super::t5::t5_ops(&c),
    })
}

impl Model {
    /// Parses `raw` (a config.json; `origin` names it in errors) and builds the architecture it
    /// names, asking `source` for every parameter by HF name.
    pub fn load(raw: Value, origin: &str, device: &Device, source: &mut TensorSource<'_>) -> Result<Self> {
        Self::load_with(raw, origin, device, source, None)
    }

    /// [`Model::load`] asking `weights`, when given, first for each linear weight: those it
    /// supplies stay in their file's quantization.
    pub fn load_with<'a>(
        raw: Value,
        origin: &str,
        device: &Device,
        source: &mut TensorSource<'a>,
        weights: Option<&mut WeightSource<'a>>,
    ) -> Result<Self> {
        let config = ArchConfig::parse(raw, origin)?;
        let l = Loader::new(source, device).with_weights(weights);
        Ok(match config {
            ArchConfig::Llama(c) => Self::Llama(Box::new(Llama::declare(c, l)?)),
            ArchConfig::Opt(c) => Self::Opt(Box::new(Opt::declare(c, l)?)),
            ArchConfig::Bloom(c) => Self::Bloom(Box::new(Bloom::declare(c, l)?)),
            ArchConfig::T5(c) => Self::T5(Box::new(T5::declare(c, l)?)),
        })
    }

    /// A decoder-only model's logits `[B, S, V]` for token ids `[B, S]`, with the mask of
    /// `attention_mask`; with a cache, positions continue after the cached ones. An error for an
    /// encoder-decoder model, which needs decoder inputs (see [`Model::train_logits`] and `eval::generate`).
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Option<&Mask>, cache: Option<&mut KvCache>) -> Result<Tensor<3>> {
        Ok(match self {
            Self::Llama(m) => m.forward(ids, mask, cache),
            Self::Opt(m) => m.forward(ids, mask, cache),
            Self::Bloom(m) => m.forward(ids, mask, cache),
            Self::T5(_) => return Err(self.not_causal("a decoder-only forward pass")),
        })
    }

    /// Encoder-decoder models read a source and write a target; decoder-only models continue one sequence.
    pub fn is_encoder_decoder(&self) -> bool {
        matches!(self, Self::T5(_))
    }

    fn not_causal(&self, what: &str) -> Error {
        let t = self.info().model_type;
        Error::Other(format!("{t} is an encoder-decoder model: {what} needs a decoder-only model (its source and target go apart)"))
    }

    /// Teacher-forced logits for a training batch: `[B, S, V]` over the whole sequence of a
    /// decoder-only model, `[B, T, V]` over the target of an encoder-decoder model. An error when
    /// the batch was laid out for the other kind of model.
    pub fn train_logits(&self, input: &BatchInput) -> Result<Tensor<3>> {
        Ok(vocab_logits(self.train_hidden(input)?, self.head()))
    }

    /// The training loss of `input` against `labels` as transformers computes it for this kind of
    /// model (shifted by one for a causal LM, aligned for a sequence-to-sequence model), and the
    /// number of tokens it averages over.
    ///
    /// The head and the loss go together in chunks of tokens (see [`head_cross_entropy`]), so the
    /// `[B, S, V]` logits are never held at once.
    pub fn train_loss(&self, input: &BatchInput, labels: &[i64]) -> Result<(Tensor<1>, usize)> {
        let hidden = self.train_hidden(input)?;
        let [b, s, d] = hidden.dims();
        let hidden = hidden.reshape([b * s, d]);
        let head = self.head();
        Ok(match self.is_encoder_decoder() {
            true => head_cross_entropy(hidden, head, labels),
            false => head_cross_entropy(hidden, head, &causal_targets(labels, s)),
        })
    }

    /// [`Model::train_loss`] of a decoder-only batch whose first `prefix` positions run through
    /// `frozen` (this model's values, no parameter tracked) into a key/value cache: the loss is
    /// the same, but no gradient flows into the prefix's keys and values, so the backward pass
    /// covers the other positions only. A `prefix` of 0, or an encoder-decoder batch, is
    /// [`Model::train_loss`].
    pub fn train_loss_after_prefix(&self, frozen: &Model, input: &BatchInput, labels: &[i64], prefix: usize) -> Result<(Tensor<1>, usize)> {
        let BatchInput::Causal { ids, mask } = input else { return self.train_loss(input, labels) };
        let [b, s] = ids.dims();
        if prefix == 0 || prefix >= s || self.is_encoder_decoder() {
            return self.train_loss(input, labels);
        }
        let rest = s - prefix;
        let mut cache = KvCache::default();
        let prefix_padding: Option<Vec<u32>> =
            mask.padding.as_ref().map(|p| p.chunks(s).flat_map(|row| row[..prefix].iter().copied()).collect());
        let prefix_mask = attention_mask(prefix_padding.as_deref(), b, prefix, 0);
        frozen.forward_hidden(ids.clone().narrow(1, 0, prefix), &prefix_mask, &mut cache)?;
        let rest_mask = attention_mask(mask.padding.as_deref(), b, rest, prefix);
        let hidden = self.forward_hidden(ids.clone().narrow(1, prefix, rest), &rest_mask, &mut cache)?;
        let d = hidden.dims()[2];
        let targets: Vec<i64> = causal_targets(labels, s).chunks(s).flat_map(|row| row[prefix..].iter().copied()).collect();
        Ok(head_cross_entropy(hidden.reshape([b * rest, d]), self.head(), &targets))
    }

    /// A decoder-only model's final hidden states for `ids` after the positions `cache` holds.
    fn forward_hidden(&self, ids: Tensor<2, Int>, mask: &Mask, cache: &mut KvCache) -> Result<Tensor<3>> {
        Ok(match self {
            Self::Llama(m) => m.hidden(ids, Some(mask), Some(cache)),
            Self::Opt(m) => m.hidden(ids, Some(mask), Some(cache)),
            Self::Bloom(m) => m.hidden(ids, Some(mask), Some(cache)),
            Self::T5(_) => return Err(self.not_causal("a decoder-only forward pass")),
        })
    }

    /// The LM head `[V, d]`: its own weight, or the (tied) embedding table.
    fn head(&self) -> Tensor<2> {
        each!(self, m => m.head())
    }

    /// [`Model::train_logits`] before the head: the final hidden states `[B, S|T, d]`.
    fn train_hidden(&self, input: &BatchInput) -> Result<Tensor<3>> {
        match (self, input) {
            (Self::T5(m), BatchInput::Seq2Seq { ids, padding, decoder_ids }) => {
                Ok(m.forward_hidden(ids.clone(), Some(padding), decoder_ids.clone()))
            }
            (Self::T5(_), BatchInput::Causal { .. }) => Err(self.not_causal("a causal-LM batch")),
            (Self::Llama(m), BatchInput::Causal { ids, mask }) => Ok(m.hidden(ids.clone(), Some(mask), None)),
            (Self::Opt(m), BatchInput::Causal { ids, mask }) => Ok(m.hidden(ids.clone(), Some(mask), None)),
            (Self::Bloom(m), BatchInput::Causal { ids, mask }) => Ok(m.hidden(ids.clone(), Some(mask), None)),
            (_, BatchInput::Seq2Seq { .. }) => {
                Err(Error::Other(format!("{} is a decoder-only model: an encoder-decoder batch needs an encoder", self.info().model_type)))
            }
        }
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
            Self::T5(m) => {
                let c = &m.config;
                ModelInfo {
                    model_type: "t5".into(),
                    vocab_size: c.vocab_size,
                    hidden_size: c.d_model,
                    layers: c.num_layers + c.num_decoder_layers,
                    heads: c.num_heads,
                    kv_heads: c.num_heads,
                    head_dim: c.d_kv,
                    context_length: None,
                    tied_embeddings: m.lm_head.is_none(),
                    bos_token_id: None,
                    eos_token_ids: c.eos_token_ids.clone(),
                    pad_token_id: Some(c.pad_token_id),
                }
            }
        }
    }

    /// The longest sequence the model runs: OPT's learned position table ends at
    /// `max_position_embeddings`, and a rotary (Llama) model was trained up to its
    /// `max_position_embeddings` (past it, outputs degrade without any error to show it). ALiBi
    /// (BLOOM) and relative-bucket (T5) positions have no stated end.
    pub fn position_limit(&self) -> Option<usize> {
        match self {
            Self::Opt(m) => Some(m.config.max_position_embeddings),
            Self::Llama(m) => Some(m.config.max_position_embeddings),
            Self::Bloom(_) | Self::T5(_) => None,
        }
    }

    /// FT-top-k's tensors: every parameter of the last `k` blocks in the op graph and of what
    /// follows them (the final norm, an untied head). For T5, whose decoder blocks are numbered after
    /// the encoder's, these are the decoder's last blocks (with their cross-attention keys/values),
    /// the decoder's final norm and an untied head.
    pub fn top_layers(&self, k: usize) -> std::collections::BTreeSet<String> {
        let ops = self.op_graph();
        let top = super::graph::top_k_blocks(&ops.iter().map(|op| op.layer).collect::<Vec<_>>(), k);
        let params: std::collections::BTreeSet<String> = self.param_names().into_iter().collect();
        ops.into_iter().zip(top).filter(|(op, top)| *top && params.contains(&op.name)).map(|(op, _)| op.name).collect()
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
    fn modules_mut(&mut self) -> Vec<ModuleMut<'_>> {
        each!(self, m => m.modules_mut())
    }
}
