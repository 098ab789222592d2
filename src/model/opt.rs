//! OPT as in HF transformers' `modeling_opt` (OPTForCausalLM): learned positions with an offset of 2,
//! LayerNorm before (most sizes) or after (350m) each sub-block, a ReLU MLP (fc1/fc2), and for 350m
//! bias-free projections between the embedding width (`word_embed_proj_dim`) and `hidden_size`.
//!
//! Weights keep HF's names and `[out, in]` layout, like `Llama`; a parameter wrapped with
//! `.autodiff().require_grad()` is trained, a plain one is frozen.

use std::sync::Arc;

use burn::tensor::activation::relu;
use burn::tensor::{DType, Device, Int, Tensor};
use serde::Deserialize;
use serde_json::Value;

use super::attention::{Bias, Mask, attend};
use super::cache::{KvCache, LayerCache, extend};
use super::config::{all_ids, check_sizes, check_token_ids, deserialize, first_id, parse_json};
use super::graph::{OpSpec, TensorRole};
use super::linear::{Linear, vocab_logits};
use super::loader::{Loader, TensorSource};
use super::norm::LayerNorm;
use super::params::{ModuleMut, Parameters, Table};
use crate::error::{Error, Result};

/// OPT's learned position table starts at row 2 (rows 0 and 1 are a fairseq padding leftover).
pub const POSITION_OFFSET: usize = 2;

/// `nn.LayerNorm`'s default epsilon, which OPT keeps.
const LAYER_NORM_EPS: f64 = 1e-5;

/// Activations this build implements, by `activation_function`.
const SUPPORTED_ACTIVATIONS: &[&str] = &["relu"];

/// The fields of an OPT `config.json` the engine needs; `raw` keeps the whole file for export.
#[derive(Debug, Clone)]
pub struct OptConfig {
    pub hidden_size: usize,
    pub ffn_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    /// Width of the token embedding and the head; differs from `hidden_size` in opt-350m.
    pub word_embed_proj_dim: usize,
    /// Pre-LN (true) or post-LN (false, opt-350m).
    pub do_layer_norm_before: bool,
    /// Attention projections and fc1/fc2 carry biases.
    pub enable_bias: bool,
    /// LayerNorms carry a weight and a bias.
    pub layer_norm_elementwise_affine: bool,
    pub activation_function: String,
    /// Only for checkpoints fine-tuned before transformers 4.20.1: no decoder-level final LayerNorm.
    pub remove_final_layer_norm: bool,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: Option<u32>,
    pub raw: Value,
}

/// `OPTConfig`'s fields; the optional ones default as in transformers.
#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    hidden_size: usize,
    ffn_dim: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    vocab_size: usize,
    max_position_embeddings: Option<usize>,
    word_embed_proj_dim: Option<usize>,
    do_layer_norm_before: Option<bool>,
    enable_bias: Option<bool>,
    layer_norm_elementwise_affine: Option<bool>,
    activation_function: Option<String>,
    #[serde(rename = "_remove_final_layer_norm")]
    remove_final_layer_norm: Option<bool>,
    tie_word_embeddings: Option<bool>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
    pad_token_id: Option<Value>,
}

impl OptConfig {
    /// Parses a config.json text; `origin` names the file in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        Self::from_value(parse_json(text, origin)?, origin)
    }

    pub fn from_value(raw: Value, origin: &str) -> Result<Self> {
        let c: RawConfig = deserialize(&raw, origin, "an OPT config.json")?;
        let is_opt = match (&c.model_type, &c.architectures) {
            (Some(t), _) => t == "opt",
            (None, Some(archs)) => archs.iter().any(|a| a.starts_with("OPT")),
            (None, None) => false,
        };
        if !is_opt {
            let what = c.model_type.as_deref().map_or("a config without model_type".into(), |t| format!("model_type {t:?}"));
            return Err(Error::Unsupported { path: origin.into(), what, supported: "opt".into() });
        }
        let activation_function = c.activation_function.unwrap_or_else(|| "relu".into());
        if !SUPPORTED_ACTIVATIONS.contains(&activation_function.as_str()) {
            return Err(Error::Unsupported {
                path: origin.into(),
                what: format!("activation_function {activation_function:?}"),
                supported: SUPPORTED_ACTIVATIONS.join(", "),
            });
        }
        let word_embed_proj_dim = c.word_embed_proj_dim.unwrap_or(c.hidden_size);
        let max_position_embeddings = c.max_position_embeddings.unwrap_or(2048);
        check_sizes(
            origin,
            &[
                ("hidden_size", c.hidden_size),
                ("ffn_dim", c.ffn_dim),
                ("num_hidden_layers", c.num_hidden_layers),
                ("num_attention_heads", c.num_attention_heads),
                ("vocab_size", c.vocab_size),
                ("word_embed_proj_dim", word_embed_proj_dim),
                ("max_position_embeddings", max_position_embeddings),
            ],
        )?;
        check_token_ids(&raw, c.vocab_size, origin)?;
        if !c.hidden_size.is_multiple_of(c.num_attention_heads) {
            return Err(Error::invalid(
                origin,
                format!("hidden_size {} is not a multiple of num_attention_heads {}", c.hidden_size, c.num_attention_heads),
            ));
        }
        Ok(Self {
            hidden_size: c.hidden_size,
            ffn_dim: c.ffn_dim,
            num_hidden_layers: c.num_hidden_layers,
            num_attention_heads: c.num_attention_heads,
            vocab_size: c.vocab_size,
            max_position_embeddings,
            word_embed_proj_dim,
            do_layer_norm_before: c.do_layer_norm_before.unwrap_or(true),
            enable_bias: c.enable_bias.unwrap_or(true),
            layer_norm_elementwise_affine: c.layer_norm_elementwise_affine.unwrap_or(true),
            activation_function,
            remove_final_layer_norm: c.remove_final_layer_norm.unwrap_or(false),
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(true),
            bos_token_id: c.bos_token_id.as_ref().and_then(first_id),
            eos_token_ids: c.eos_token_id.as_ref().map(all_ids).unwrap_or_default(),
            pad_token_id: c.pad_token_id.as_ref().and_then(first_id),
            raw,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Whether the token embedding is projected in and out of the model width.
    pub fn has_projections(&self) -> bool {
        self.word_embed_proj_dim != self.hidden_size
    }

    /// The decoder-level LayerNorm after the last layer exists only in pre-LN models.
    pub fn has_final_layer_norm(&self) -> bool {
        self.do_layer_norm_before && !self.remove_final_layer_norm
    }
}

#[derive(Clone, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    n_heads: usize,
    head_dim: usize,
}

impl Attention {
    fn forward(&self, x: Tensor<3>, mask: Option<&Mask>, cache: Option<&mut LayerCache>) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let heads = |t: Tensor<3>| t.reshape([b, s, self.n_heads, self.head_dim]).swap_dims(1, 2);
        // HF OPT scales the queries, not the scores, which rounds differently.
        let q = heads(self.q_proj.forward(x.clone()).mul_scalar((self.head_dim as f64).powf(-0.5)));
        let k = heads(self.k_proj.forward(x.clone()));
        let v = heads(self.v_proj.forward(x));
        let (k, v) = extend(cache, k, v);
        let out = attend(q, k, v, mask, 1.0, Bias::None);
        self.out_proj.forward(out.swap_dims(1, 2).reshape([b, s, self.n_heads * self.head_dim]))
    }
}

#[derive(Clone, Debug)]
pub struct Block {
    pub self_attn_layer_norm: LayerNorm,
    pub self_attn: Attention,
    pub final_layer_norm: LayerNorm,
    pub fc1: Linear,
    pub fc2: Linear,
    /// Pre-LN (norm the sub-block's input) or post-LN (norm the residual sum).
    norm_before: bool,
}

impl Block {
    fn forward(&self, x: Tensor<3>, mask: Option<&Mask>, cache: Option<&mut LayerCache>) -> Tensor<3> {
        let pre = |norm: &LayerNorm, x: Tensor<3>| if self.norm_before { norm.forward(x) } else { x };
        let post = |norm: &LayerNorm, x: Tensor<3>| if self.norm_before { x } else { norm.forward(x) };
        let h = self.self_attn.forward(pre(&self.self_attn_layer_norm, x.clone()), mask, cache);
        let x = post(&self.self_attn_layer_norm, x + h);
        let h = self.fc2.forward(relu(self.fc1.forward(pre(&self.final_layer_norm, x.clone()))));
        post(&self.final_layer_norm, x + h)
    }
}

#[derive(Clone, Debug)]
pub struct Opt {
    pub config: OptConfig,
    /// `[vocab, word_embed_proj_dim]`.
    pub embed_tokens: Table,
    /// `[max_position_embeddings + 2, hidden]`.
    pub embed_positions: Table,
    pub project_in: Option<Linear>,
    pub layers: Vec<Block>,
    pub final_layer_norm: Option<LayerNorm>,
    pub project_out: Option<Linear>,
    /// `None` when tied to `embed_tokens`.
    pub lm_head: Option<Table>,
    /// The op graph recorded while loading.
    graph: Arc<[OpSpec]>,
}

/// The op graph of an OPT model from its config alone, which fixes every shape `load` reads: for
/// planning a run without weights.
pub fn opt_ops(config: &OptConfig) -> Vec<OpSpec> {
    Opt::declare(config.clone(), Loader::planning()).expect("planning reads no file").op_graph()
}

impl Opt {
    /// Builds the model, asking `source` for every parameter.
    pub fn load(config: OptConfig, device: &Device, source: &mut TensorSource<'_>) -> Result<Self> {
        Self::declare(config, Loader::new(source, device))
    }

    /// Every parameter and weightless op in execution order: the one place their HF names are
    /// spelled. A LayerNorm without elementwise affine has no parameter, hence no op.
    pub(crate) fn declare(config: OptConfig, mut l: Loader<'_, '_>) -> Result<Self> {
        let c = &config;
        let (d, e, ffn, bias, affine) = (c.hidden_size, c.word_embed_proj_dim, c.ffn_dim, c.enable_bias, c.layer_norm_elementwise_affine);
        let layer_norm = |l: &mut Loader<'_, '_>, prefix: &str| l.layer_norm(prefix, d, affine, LAYER_NORM_EPS);
        let embed_tokens = l.embedding("model.decoder.embed_tokens.weight", c.vocab_size, e)?;
        let project_in = match c.has_projections() {
            true => Some(l.linear("model.decoder.project_in", e, d, false, TensorRole::Other)?),
            false => None,
        };
        // Positions are added after project_in: training them needs no gradient through it.
        let embed_positions = l.embedding("model.decoder.embed_positions.weight", c.max_position_embeddings + POSITION_OFFSET, d)?;
        // No capacity from the config's layer count: a corrupt count (2^63) would abort in the
        // allocation, while the first missing layer ends the load with an error.
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            let name = |part: &str| format!("model.decoder.layers.{i}.{part}");
            l.block(Some(i));
            // Pre-LN norms each sub-block's input, post-LN (opt-350m) its residual sum.
            let pre_attention_norm = if c.do_layer_norm_before { Some(layer_norm(&mut l, &name("self_attn_layer_norm"))?) } else { None };
            let q_proj = l.linear(&name("self_attn.q_proj"), d, d, bias, TensorRole::Q)?;
            let k_proj = l.linear(&name("self_attn.k_proj"), d, d, bias, TensorRole::K)?;
            let v_proj = l.linear(&name("self_attn.v_proj"), d, d, bias, TensorRole::V)?;
            l.attention_core(&name("self_attn"), c.num_attention_heads, c.head_dim(), true);
            let out_proj = l.linear(&name("self_attn.out_proj"), d, d, bias, TensorRole::O)?;
            let (self_attn_layer_norm, pre_mlp_norm) = match pre_attention_norm {
                Some(norm) => (norm, Some(layer_norm(&mut l, &name("final_layer_norm"))?)),
                None => (layer_norm(&mut l, &name("self_attn_layer_norm"))?, None),
            };
            let fc1 = l.linear(&name("fc1"), d, ffn, bias, TensorRole::Fc1)?;
            let fc2 = l.linear(&name("fc2"), ffn, d, bias, TensorRole::Fc2)?;
            let final_layer_norm = match pre_mlp_norm {
                Some(norm) => norm,
                None => layer_norm(&mut l, &name("final_layer_norm"))?,
            };
            let self_attn = Attention { q_proj, k_proj, v_proj, out_proj, n_heads: c.num_attention_heads, head_dim: c.head_dim() };
            layers.push(Block { self_attn_layer_norm, self_attn, final_layer_norm, fc1, fc2, norm_before: c.do_layer_norm_before });
        }
        l.block(None);
        let final_layer_norm = if c.has_final_layer_norm() { Some(layer_norm(&mut l, "model.decoder.final_layer_norm")?) } else { None };
        let project_out = match c.has_projections() {
            true => Some(l.linear("model.decoder.project_out", d, e, false, TensorRole::Other)?),
            false => None,
        };
        let lm_head = l.lm_head(&embed_tokens.name, c.vocab_size, e, c.tie_word_embeddings)?;
        Ok(Self { config, embed_tokens, embed_positions, project_in, layers, final_layer_norm, project_out, lm_head, graph: l.graph() })
    }

    pub fn device(&self) -> Device {
        self.embed_tokens.weight.device()
    }

    /// Logits `[B, S, V]` for token ids `[B, S]`. `mask` is the attention mask from
    /// [`super::attention_mask`]; with a cache, positions continue after the cached ones.
    ///
    /// Positions are `past..past + S` for every row: HF derives them from the padding mask's
    /// cumulative sum, which is the same for real tokens under right padding (padded positions
    /// differ, but no real token or loss term depends on them).
    ///
    /// Panics when `past + S` exceeds `max_position_embeddings`: callers truncate to the context length.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Option<&Mask>, cache: Option<&mut KvCache>) -> Tensor<3> {
        vocab_logits(self.hidden(ids, mask, cache), self.head())
    }

    /// The LM head `[V, d]`: its own weight, or the embedding table when tied.
    pub fn head(&self) -> Tensor<2> {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens).weight.clone()
    }

    /// The final hidden states `[B, S, d]` the head reads (see [`Opt::forward`]).
    pub fn hidden(&self, ids: Tensor<2, Int>, mask: Option<&Mask>, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        let [_, s] = ids.dims();
        let start = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let max = self.config.max_position_embeddings;
        assert!(start + s <= max, "OPT: {} positions exceed max_position_embeddings {max}", start + s);
        let mut x = self.embed_tokens.lookup(ids);
        if let Some(project_in) = &self.project_in {
            x = project_in.forward(x);
        }
        x = x + self.embed_positions.weight.clone().narrow(0, start + POSITION_OFFSET, s).cast(DType::F32).unsqueeze::<3>();
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| c.layer(i, self.layers.len()));
            x = layer.forward(x, mask, slot);
        }
        if let Some(norm) = &self.final_layer_norm {
            x = norm.forward(x);
        }
        if let Some(project_out) = &self.project_out {
            x = project_out.forward(x);
        }
        x
    }

    /// The execution-ordered op graph (input -> output) the FLOPs profiler works on, as `load`
    /// declared it.
    pub fn op_graph(&self) -> Vec<OpSpec> {
        self.graph.to_vec()
    }
}

impl Parameters for Opt {
    /// The order `load` declares them in.
    fn modules_mut(&mut self) -> Vec<ModuleMut<'_>> {
        let mut out = vec![ModuleMut::Table(&mut self.embed_tokens)];
        out.extend(self.project_in.as_mut().map(ModuleMut::Linear));
        out.push(ModuleMut::Table(&mut self.embed_positions));
        for b in &mut self.layers {
            let a = &mut b.self_attn;
            let (attention_norm, mlp_norm) =
                (ModuleMut::LayerNorm(&mut b.self_attn_layer_norm), ModuleMut::LayerNorm(&mut b.final_layer_norm));
            let attention = [&mut a.q_proj, &mut a.k_proj, &mut a.v_proj, &mut a.out_proj].map(ModuleMut::Linear);
            let mlp = [&mut b.fc1, &mut b.fc2].map(ModuleMut::Linear);
            match b.norm_before {
                true => out.extend([attention_norm].into_iter().chain(attention).chain([mlp_norm]).chain(mlp)),
                false => out.extend(attention.into_iter().chain([attention_norm]).chain(mlp).chain([mlp_norm])),
            }
        }
        out.extend(self.final_layer_norm.as_mut().map(ModuleMut::LayerNorm));
        out.extend(self.project_out.as_mut().map(ModuleMut::Linear));
        out.extend(self.lm_head.as_mut().map(ModuleMut::Table));
        out
    }
}
