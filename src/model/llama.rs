//! The Llama family (Llama 2/3, SmolLM2, TinyLlama, Qwen2) as in HF transformers' `modeling_llama`:
//! RMSNorm, rotary embeddings (rotate-half layout), grouped-query attention, SwiGLU MLP.
//!
//! Weights keep HF's layout (`[out, in]`), so names, shapes and the row blocks that partial
//! selection works on are the same as in the user's files. A parameter that is a plain tensor is
//! frozen; one wrapped with `.autodiff().require_grad()` is trained, and autodiff records nothing
//! below the deepest such tensor.

use std::sync::Arc;

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::attention::{Bias, Mask, attend};
use super::cache::{KvCache, LayerCache, extend};
use super::config::LlamaConfig;
use super::graph::{OpSpec, TensorRole};
use super::linear::{Linear, vocab_logits};
use super::loader::{Loader, TensorSource};
use super::norm::RmsNorm;
use super::params::{ModuleMut, Parameters, Table};
use crate::error::Result;

#[derive(Clone, Debug)]
pub struct Attention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub o_proj: Linear,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
}

/// cos/sin tables for a run of positions, shaped `[1, 1, S, head_dim]`.
#[derive(Clone, Debug)]
pub struct Rotary {
    cos: Tensor<4>,
    sin: Tensor<4>,
}

impl Rotary {
    /// Computed like transformers: f32 inverse frequencies times f32 positions, then cos/sin.
    pub fn new(config: &LlamaConfig, start: usize, len: usize, device: &Device) -> Self {
        let hd = config.head_dim;
        let inv_freq: Vec<f32> = config.rope.inv_freq(hd).into_iter().map(|f| f as f32).collect();
        let mut cos = Vec::with_capacity(len * hd);
        let mut sin = Vec::with_capacity(len * hd);
        for pos in start..start + len {
            let angles: Vec<f32> = inv_freq.iter().map(|f| pos as f32 * f).collect();
            for _ in 0..2 {
                cos.extend(angles.iter().map(|a| a.cos()));
                sin.extend(angles.iter().map(|a| a.sin()));
            }
        }
        let make = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, 1, len, hd]), device);
        Self { cos: make(cos), sin: make(sin) }
    }

    fn apply(&self, x: Tensor<4>) -> Tensor<4> {
        let half = x.dims()[3] / 2;
        let x1 = x.clone().narrow(3, 0, half);
        let x2 = x.clone().narrow(3, half, half);
        let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

impl Attention {
    fn forward(&self, x: Tensor<3>, rotary: &Rotary, mask: Option<&Mask>, cache: Option<&mut LayerCache>) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let heads = |t: Tensor<3>, n: usize| t.reshape([b, s, n, self.head_dim]).swap_dims(1, 2);
        let q = rotary.apply(heads(self.q_proj.forward(x.clone()), self.n_heads));
        let k = rotary.apply(heads(self.k_proj.forward(x.clone()), self.n_kv_heads));
        let v = heads(self.v_proj.forward(x), self.n_kv_heads);
        let (k, v) = extend(cache, k, v);
        let out = attend(q, k, v, mask, (self.head_dim as f64).powf(-0.5), Bias::None);
        self.o_proj.forward(out.swap_dims(1, 2).reshape([b, s, self.n_heads * self.head_dim]))
    }
}

#[derive(Clone, Debug)]
pub struct Mlp {
    pub gate_proj: Linear,
    pub up_proj: Linear,
    pub down_proj: Linear,
}

impl Mlp {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.down_proj.forward(crate::kernels::swiglu(self.gate_proj.forward(x.clone()), self.up_proj.forward(x)))
    }
}

#[derive(Clone, Debug)]
pub struct Block {
    pub input_layernorm: RmsNorm,
    pub self_attn: Attention,
    pub post_attention_layernorm: RmsNorm,
    pub mlp: Mlp,
}

#[derive(Clone, Debug)]
pub struct Llama {
    pub config: LlamaConfig,
    pub embed_tokens: Table,
    pub layers: Vec<Block>,
    pub norm: RmsNorm,
    /// `None` when tied to `embed_tokens`.
    pub lm_head: Option<Table>,
    /// The op graph recorded while loading.
    graph: Arc<[OpSpec]>,
}

/// The op graph of a Llama-family model from its config alone, which fixes every shape `load`
/// reads: for planning a run without weights.
pub fn llama_ops(config: &LlamaConfig) -> Vec<OpSpec> {
    Llama::declare(config.clone(), Loader::planning()).expect("planning reads no file").op_graph()
}

impl Llama {
    /// Builds the model, asking `source` for every parameter.
    pub fn load(config: LlamaConfig, device: &Device, source: &mut TensorSource<'_>) -> Result<Self> {
        Self::declare(config, Loader::new(source, device))
    }

    /// Every parameter and weightless op in execution order: the one place their HF names are
    /// spelled.
    pub(crate) fn declare(config: LlamaConfig, mut l: Loader<'_, '_>) -> Result<Self> {
        let c = &config;
        let (d, q, kv, f, eps) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size, c.rms_norm_eps);
        let embed_tokens = l.embedding("model.embed_tokens.weight", c.vocab_size, d)?;
        // No capacity from the config's layer count: a corrupt count (2^63) would abort in the
        // allocation, while the first missing layer ends the load with an error.
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            let name = |part: &str| format!("model.layers.{i}.{part}");
            l.block(Some(i));
            let input_layernorm = l.rms_norm(&name("input_layernorm"), d, eps)?;
            let q_proj = l.linear(&name("self_attn.q_proj"), d, q, c.qkv_bias, TensorRole::Q)?;
            let k_proj = l.linear(&name("self_attn.k_proj"), d, kv, c.qkv_bias, TensorRole::K)?;
            let v_proj = l.linear(&name("self_attn.v_proj"), d, kv, c.qkv_bias, TensorRole::V)?;
            l.attention_core(&name("self_attn"), c.num_attention_heads, c.head_dim, true);
            let o_proj = l.linear(&name("self_attn.o_proj"), q, d, c.o_bias, TensorRole::O)?;
            let post_attention_layernorm = l.rms_norm(&name("post_attention_layernorm"), d, eps)?;
            let gate_proj = l.linear(&name("mlp.gate_proj"), d, f, c.mlp_bias, TensorRole::Gate)?;
            let up_proj = l.linear(&name("mlp.up_proj"), d, f, c.mlp_bias, TensorRole::Up)?;
            let down_proj = l.linear(&name("mlp.down_proj"), f, d, c.mlp_bias, TensorRole::Down)?;
            let (n_heads, n_kv_heads, head_dim) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
            layers.push(Block {
                input_layernorm,
                self_attn: Attention { q_proj, k_proj, v_proj, o_proj, n_heads, n_kv_heads, head_dim },
                post_attention_layernorm,
                mlp: Mlp { gate_proj, up_proj, down_proj },
            });
        }
        l.block(None);
        let norm = l.rms_norm("model.norm", d, eps)?;
        let lm_head = l.lm_head(&embed_tokens.name, c.vocab_size, d, c.tie_word_embeddings)?;
        Ok(Self { config, embed_tokens, layers, norm, lm_head, graph: l.graph() })
    }

    pub fn device(&self) -> Device {
        self.embed_tokens.weight.device()
    }

    /// Logits `[B, S, V]` for token ids `[B, S]`. `mask` is the attention mask from
    /// [`super::attention_mask`]; with a cache, positions continue after the cached ones.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Option<&Mask>, cache: Option<&mut KvCache>) -> Tensor<3> {
        vocab_logits(self.hidden(ids, mask, cache), self.head())
    }

    /// The LM head `[V, d]`: its own weight, or the embedding table when tied.
    pub fn head(&self) -> Tensor<2> {
        self.lm_head.as_ref().unwrap_or(&self.embed_tokens).weight.clone()
    }

    /// The final hidden states `[B, S, d]` the head reads (see [`Llama::forward`]).
    pub fn hidden(&self, ids: Tensor<2, Int>, mask: Option<&Mask>, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        let [_, s] = ids.dims();
        let start = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let device = ids.device();
        let rotary = Rotary::new(&self.config, start, s, &device);
        let mut x = self.embed_tokens.lookup(ids);
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| c.layer(i, self.layers.len()));
            let h = layer.self_attn.forward(layer.input_layernorm.forward(x.clone()), &rotary, mask, slot);
            x = x + h;
            x = x.clone() + layer.mlp.forward(layer.post_attention_layernorm.forward(x));
        }
        self.norm.forward(x)
    }
}

impl Parameters for Llama {
    fn modules_mut(&mut self) -> Vec<ModuleMut<'_>> {
        let mut out = vec![ModuleMut::Table(&mut self.embed_tokens)];
        for b in &mut self.layers {
            let (a, m) = (&mut b.self_attn, &mut b.mlp);
            out.extend([
                ModuleMut::RmsNorm(&mut b.input_layernorm),
                ModuleMut::Linear(&mut a.q_proj),
                ModuleMut::Linear(&mut a.k_proj),
                ModuleMut::Linear(&mut a.v_proj),
                ModuleMut::Linear(&mut a.o_proj),
                ModuleMut::RmsNorm(&mut b.post_attention_layernorm),
                ModuleMut::Linear(&mut m.gate_proj),
                ModuleMut::Linear(&mut m.up_proj),
                ModuleMut::Linear(&mut m.down_proj),
            ]);
        }
        out.push(ModuleMut::RmsNorm(&mut self.norm));
        out.extend(self.lm_head.as_mut().map(ModuleMut::Table));
        out
    }
}

impl Llama {
    /// The execution-ordered op graph (input -> output) the FLOPs profiler works on, as `load`
    /// declared it.
    pub fn op_graph(&self) -> Vec<OpSpec> {
        self.graph.to_vec()
    }
}
