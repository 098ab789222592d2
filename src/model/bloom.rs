//! BLOOM and BLOOMZ as in HF transformers' `modeling_bloom` (`BloomForCausalLM`): an embedding
//! LayerNorm, ALiBi attention biases instead of position embeddings, a fused query_key_value
//! projection, a tanh-approximated GELU MLP of width 4 x hidden, LayerNorms with bias and a head
//! tied to the word embeddings.
//!
//! Weights keep HF's layout and names. In `query_key_value.weight` (`[3 * hidden, hidden]`) the
//! output rows are grouped per head: rows `h * 3 * head_dim ..` hold head h's query, key and value
//! (`head_dim` rows each), so one head's row block is `3 * head_dim` rows, not `head_dim`.

use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor};
use serde::Deserialize;
use serde_json::Value;

use super::attention::{Bias, Mask, attend};
use super::cache::{KvCache, LayerCache, extend};
use super::config::{all_ids, check_positive, check_sizes, check_token_ids, deserialize, first_id, parse_json};
use super::graph::{OpSpec, TensorRole};
use super::linear::{Linear, vocab_logits};
use super::loader::{Loader, TensorSource};
use super::norm::LayerNorm;
use super::params::{ModuleMut, Parameters, Table};
use crate::error::{Error, Result};

/// The fields of a BLOOM `config.json` the engine needs; `raw` keeps the whole file for export.
#[derive(Debug, Clone)]
pub struct BloomConfig {
    pub hidden_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub vocab_size: usize,
    pub layer_norm_epsilon: f64,
    /// Residuals branch off after the LayerNorms instead of before them.
    pub apply_residual_connection_post_layernorm: bool,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub raw: Value,
}

/// transformers' `BloomConfig` maps `num_hidden_layers`/`num_attention_heads` onto `n_layer`/`n_head`
/// and reads the legacy `n_embed` as `hidden_size`, so a file may use either spelling.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    hidden_size: Option<usize>,
    n_embed: Option<usize>,
    n_layer: Option<usize>,
    num_hidden_layers: Option<usize>,
    n_head: Option<usize>,
    num_attention_heads: Option<usize>,
    vocab_size: usize,
    layer_norm_epsilon: Option<f64>,
    apply_residual_connection_post_layernorm: Option<bool>,
    tie_word_embeddings: Option<bool>,
    pretraining_tp: Option<usize>,
    slow_but_exact: Option<bool>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
    pad_token_id: Option<Value>,
}

impl BloomConfig {
    /// Parses a config.json text; `origin` names the file in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        Self::from_value(parse_json(text, origin)?, origin)
    }

    pub fn from_value(raw: Value, origin: &str) -> Result<Self> {
        let c: RawConfig = deserialize(&raw, origin, "a BLOOM config.json")?;
        let model_type = c.model_type.clone().or_else(|| {
            c.architectures.as_ref().and_then(|a| a.first()).map(|a| if a == "BloomForCausalLM" { "bloom".into() } else { a.clone() })
        });
        if model_type.as_deref() != Some("bloom") {
            return Err(Error::Unsupported { path: origin.into(), what: format!("model_type {model_type:?}"), supported: "bloom".into() });
        }
        // With slow_but_exact, transformers splits the dense layers into pretraining_tp slices
        // summed in a different order; that rounding is not reproduced here.
        let tp = c.pretraining_tp.unwrap_or(1);
        if tp > 1 && c.slow_but_exact.unwrap_or(false) {
            return Err(Error::Unsupported {
                path: origin.into(),
                what: format!("pretraining_tp {tp} with slow_but_exact"),
                supported: "pretraining_tp 1, or slow_but_exact false".into(),
            });
        }
        let hidden_size = either(origin, "hidden_size", c.hidden_size, "n_embed", c.n_embed)?;
        let n_layer = either(origin, "n_layer", c.n_layer, "num_hidden_layers", c.num_hidden_layers)?;
        let n_head = either(origin, "n_head", c.n_head, "num_attention_heads", c.num_attention_heads)?;
        check_sizes(origin, &[("hidden_size", hidden_size), ("n_layer", n_layer), ("n_head", n_head), ("vocab_size", c.vocab_size)])?;
        if !hidden_size.is_multiple_of(n_head) {
            return Err(Error::invalid(origin, format!("hidden_size {hidden_size} is not a multiple of n_head {n_head}")));
        }
        let layer_norm_epsilon = c.layer_norm_epsilon.unwrap_or(1e-5);
        check_positive(origin, "layer_norm_epsilon", layer_norm_epsilon)?;
        check_token_ids(&raw, c.vocab_size, origin)?;
        Ok(Self {
            hidden_size,
            n_layer,
            n_head,
            vocab_size: c.vocab_size,
            layer_norm_epsilon,
            apply_residual_connection_post_layernorm: c.apply_residual_connection_post_layernorm.unwrap_or(false),
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(true),
            bos_token_id: c.bos_token_id.as_ref().and_then(first_id),
            eos_token_ids: c.eos_token_id.as_ref().map(all_ids).unwrap_or_default(),
            pad_token_id: c.pad_token_id.as_ref().and_then(first_id),
            raw,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.n_head
    }
}

/// A required field spelled one of two ways; both present must agree.
fn either(origin: &str, name: &str, a: Option<usize>, alias: &str, b: Option<usize>) -> Result<usize> {
    match (a, b) {
        (Some(a), Some(b)) if a != b => Err(Error::invalid(origin, format!("{name} {a} disagrees with {alias} {b}"))),
        (Some(v), _) | (None, Some(v)) => Ok(v),
        (None, None) => Err(Error::invalid(origin, format!("missing {name} (or {alias})"))),
    }
}

/// ALiBi slopes per head, as transformers' `build_alibi_tensor`: for the largest power of two
/// `p <= n_heads`, the geometric sequence `2^(-8k/p)`, k = 1..p; the remaining heads take the odd
/// terms `2^(-4k/p)`, k = 1, 3, 5, .. of the sequence for `2p` heads.
pub fn alibi_slopes(n_heads: usize) -> Vec<f32> {
    let p = 1usize << n_heads.max(1).ilog2();
    let geometric = |n: usize, k: usize| 2f64.powf(-8.0 * k as f64 / n as f64) as f32;
    let mut slopes: Vec<f32> = (1..=p).map(|k| geometric(p, k)).collect();
    slopes.extend((1..).step_by(2).take(n_heads.saturating_sub(p)).map(|k| geometric(2 * p, k)));
    slopes
}

/// BLOOM's GELU: the tanh approximation with transformers' rounded constant for sqrt(2/pi).
fn bloom_gelu(x: Tensor<3>) -> Tensor<3> {
    let inner = x.clone() * x.clone().square().mul_scalar(0.044715).add_scalar(1.0).mul_scalar(0.79788456);
    x.mul_scalar(0.5) * inner.tanh().add_scalar(1.0)
}

#[derive(Clone, Debug)]
pub struct Attention {
    pub query_key_value: Linear,
    pub dense: Linear,
    n_heads: usize,
    head_dim: usize,
}

impl Attention {
    /// `alibi` holds each head's slope; the bias covers every key, cached ones included.
    fn forward(&self, x: Tensor<3>, alibi: &[f32], mask: Option<&Mask>, cache: Option<&mut LayerCache>) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let hd = self.head_dim;
        let qkv = self.query_key_value.forward(x).reshape([b, s, self.n_heads, 3 * hd]);
        let part = |i: usize| qkv.clone().narrow(3, i * hd, hd).swap_dims(1, 2);
        let (q, k, v) = (part(0), part(1), part(2));
        let (k, v) = extend(cache, k, v);
        let out = attend(q, k, v, mask, (hd as f64).powf(-0.5), Bias::Alibi(alibi));
        self.dense.forward(out.swap_dims(1, 2).reshape([b, s, self.n_heads * hd]))
    }
}

#[derive(Clone, Debug)]
pub struct Mlp {
    pub dense_h_to_4h: Linear,
    pub dense_4h_to_h: Linear,
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.dense_4h_to_h.forward(bloom_gelu(self.dense_h_to_4h.forward(x)))
    }
}

#[derive(Clone, Debug)]
pub struct Block {
    pub input_layernorm: LayerNorm,
    pub self_attention: Attention,
    pub post_attention_layernorm: LayerNorm,
    pub mlp: Mlp,
}

impl Block {
    fn forward(
        &self,
        x: Tensor<3>,
        alibi: &[f32],
        mask: Option<&Mask>,
        cache: Option<&mut LayerCache>,
        residual_after_norm: bool,
    ) -> Tensor<3> {
        let normed = self.input_layernorm.forward(x.clone());
        let residual = if residual_after_norm { normed.clone() } else { x };
        let x = self.self_attention.forward(normed, alibi, mask, cache) + residual;
        let normed = self.post_attention_layernorm.forward(x.clone());
        let residual = if residual_after_norm { normed.clone() } else { x };
        self.mlp.forward(normed) + residual
    }
}

#[derive(Clone, Debug)]
pub struct Bloom {
    pub config: BloomConfig,
    pub word_embeddings: Table,
    pub word_embeddings_layernorm: LayerNorm,
    pub h: Vec<Block>,
    pub ln_f: LayerNorm,
    /// `None` when tied to `word_embeddings`.
    pub lm_head: Option<Table>,
    /// The op graph recorded while loading.
    graph: Arc<[OpSpec]>,
}

/// The op graph of a BLOOM model from its config alone, which fixes every shape `load` reads: for
/// planning a run without weights. For head-sized row blocks, `query_key_value` needs
/// `3 * head_dim` rows per head (see `Model::head_rows`).
pub fn bloom_ops(config: &BloomConfig) -> Vec<OpSpec> {
    Bloom::declare(config.clone(), Loader::planning()).expect("planning reads no file").op_graph()
}

impl Bloom {
    /// Builds the model, asking `source` for every parameter.
    pub fn load(config: BloomConfig, device: &Device, source: &mut TensorSource<'_>) -> Result<Self> {
        Self::declare(config, Loader::new(source, device))
    }

    /// Every parameter and weightless op in execution order: the one place their HF names are
    /// spelled. Every BLOOM linear layer and LayerNorm has a bias.
    pub(crate) fn declare(config: BloomConfig, mut l: Loader<'_, '_>) -> Result<Self> {
        let c = &config;
        let (d, vocab, eps) = (c.hidden_size, c.vocab_size, c.layer_norm_epsilon);
        let word_embeddings = l.embedding("transformer.word_embeddings.weight", vocab, d)?;
        let word_embeddings_layernorm = l.layer_norm("transformer.word_embeddings_layernorm", d, true, eps)?;
        // No capacity from the config's layer count: a corrupt count (2^63) would abort in the
        // allocation, while the first missing layer ends the load with an error.
        let mut h = Vec::new();
        for i in 0..c.n_layer {
            let name = |part: &str| format!("transformer.h.{i}.{part}");
            l.block(Some(i));
            let input_layernorm = l.layer_norm(&name("input_layernorm"), d, true, eps)?;
            let query_key_value = l.linear(&name("self_attention.query_key_value"), d, 3 * d, true, TensorRole::Qkv)?;
            l.attention_core(&name("self_attention"), c.n_head, c.head_dim(), true);
            let dense = l.linear(&name("self_attention.dense"), d, d, true, TensorRole::O)?;
            let post_attention_layernorm = l.layer_norm(&name("post_attention_layernorm"), d, true, eps)?;
            let dense_h_to_4h = l.linear(&name("mlp.dense_h_to_4h"), d, 4 * d, true, TensorRole::Fc1)?;
            let dense_4h_to_h = l.linear(&name("mlp.dense_4h_to_h"), 4 * d, d, true, TensorRole::Fc2)?;
            h.push(Block {
                input_layernorm,
                self_attention: Attention { query_key_value, dense, n_heads: c.n_head, head_dim: c.head_dim() },
                post_attention_layernorm,
                mlp: Mlp { dense_h_to_4h, dense_4h_to_h },
            });
        }
        l.block(None);
        let ln_f = l.layer_norm("transformer.ln_f", d, true, eps)?;
        let lm_head = l.lm_head(&word_embeddings.name, vocab, d, c.tie_word_embeddings)?;
        Ok(Self { config, word_embeddings, word_embeddings_layernorm, h, ln_f, lm_head, graph: l.graph() })
    }

    pub fn device(&self) -> Device {
        self.word_embeddings.weight.device()
    }

    /// Logits `[B, S, V]` for token ids `[B, S]`. `mask` is the attention mask from
    /// [`super::attention_mask`]; with a cache, positions continue after the cached ones.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Option<&Mask>, cache: Option<&mut KvCache>) -> Tensor<3> {
        vocab_logits(self.hidden(ids, mask, cache), self.head())
    }

    /// The LM head `[V, d]`: its own weight, or the embedding table when tied.
    pub fn head(&self) -> Tensor<2> {
        self.lm_head.as_ref().unwrap_or(&self.word_embeddings).weight.clone()
    }

    /// The final hidden states `[B, S, d]` the head reads (see [`Bloom::forward`]).
    pub fn hidden(&self, ids: Tensor<2, Int>, mask: Option<&Mask>, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        // ALiBi's bias is `slope * j` for key j. transformers numbers keys by the attention mask's
        // cumulative sum (padding counts as 0); with left or right padding that differs from `j`
        // by a constant per row, which softmax ignores, and padded keys are masked out either
        // way: only padding between real tokens would differ.
        let alibi = alibi_slopes(self.config.n_head);
        let mut x = self.word_embeddings_layernorm.forward(self.word_embeddings.lookup(ids));
        let post = self.config.apply_residual_connection_post_layernorm;
        for (i, block) in self.h.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| c.layer(i, self.h.len()));
            x = block.forward(x, &alibi, mask, slot, post);
        }
        self.ln_f.forward(x)
    }

    /// The execution-ordered op graph (input -> output) the FLOPs profiler works on, as `load`
    /// declared it.
    pub fn op_graph(&self) -> Vec<OpSpec> {
        self.graph.to_vec()
    }
}

impl Parameters for Bloom {
    fn modules_mut(&mut self) -> Vec<ModuleMut<'_>> {
        let mut out = vec![ModuleMut::Table(&mut self.word_embeddings), ModuleMut::LayerNorm(&mut self.word_embeddings_layernorm)];
        for b in &mut self.h {
            let (a, m) = (&mut b.self_attention, &mut b.mlp);
            out.extend([
                ModuleMut::LayerNorm(&mut b.input_layernorm),
                ModuleMut::Linear(&mut a.query_key_value),
                ModuleMut::Linear(&mut a.dense),
                ModuleMut::LayerNorm(&mut b.post_attention_layernorm),
                ModuleMut::Linear(&mut m.dense_h_to_4h),
                ModuleMut::Linear(&mut m.dense_4h_to_h),
            ]);
        }
        out.push(ModuleMut::LayerNorm(&mut self.ln_f));
        out.extend(self.lm_head.as_mut().map(ModuleMut::Table));
        out
    }
}
