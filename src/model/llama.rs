//! The Llama family (Llama 2/3, SmolLM2, TinyLlama, Qwen2) as in HF transformers' `modeling_llama`:
//! RMSNorm, rotary embeddings (rotate-half layout), grouped-query attention, SwiGLU MLP.
//!
//! Weights keep HF's layout (`[out, in]`), so names, shapes and the row blocks that partial
//! selection works on are the same as in the user's files. A parameter that is a plain tensor is
//! frozen; one wrapped with `.autodiff().require_grad()` is trained, and autodiff records nothing
//! below the deepest such tensor.

use burn::tensor::module::embedding;
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::attention::{Bias, Mask, attend};
use super::cache::{KvCache, LayerCache, extend};
use super::config::LlamaConfig;
use super::graph::OpSpec;
use super::graph::llama::llama_ops;
use super::linear::{Linear, Linears, vocab_logits};
use super::loader::{Loader, TensorSource};
use super::norm::RmsNorm;
use super::params::{ParamMut, ParamRef, Parameters};
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
    pub embed_tokens: Tensor<2>,
    pub layers: Vec<Block>,
    pub norm: RmsNorm,
    /// `None` when tied to `embed_tokens`.
    pub lm_head: Option<Tensor<2>>,
}

impl Llama {
    /// Builds the model, asking `source` for every parameter in HF order.
    pub fn load(config: LlamaConfig, device: &Device, source: &mut TensorSource<'_>) -> Result<Self> {
        let c = &config;
        let mut l = Loader::new(source, device);
        let (d, q, kv, f, eps) = (c.hidden_size, c.q_dim(), c.kv_dim(), c.intermediate_size, c.rms_norm_eps);
        let embed_tokens = l.matrix("model.embed_tokens.weight", [c.vocab_size, d])?;
        // No capacity from the config's layer count: a corrupt count (2^63) would abort in the
        // allocation, while the first missing layer ends the load with an error.
        let mut layers = Vec::new();
        for i in 0..c.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let mut linear = |name: &str, d_out: usize, d_in: usize, bias: bool| l.linear(&format!("{p}.{name}"), d_out, d_in, bias);
            let q_proj = linear("self_attn.q_proj", q, d, c.qkv_bias)?;
            let k_proj = linear("self_attn.k_proj", kv, d, c.qkv_bias)?;
            let v_proj = linear("self_attn.v_proj", kv, d, c.qkv_bias)?;
            let o_proj = linear("self_attn.o_proj", d, q, c.o_bias)?;
            let gate_proj = linear("mlp.gate_proj", f, d, c.mlp_bias)?;
            let up_proj = linear("mlp.up_proj", f, d, c.mlp_bias)?;
            let down_proj = linear("mlp.down_proj", d, f, c.mlp_bias)?;
            layers.push(Block {
                input_layernorm: RmsNorm::load(&mut l, &format!("{p}.input_layernorm"), d, eps)?,
                self_attn: Attention {
                    q_proj,
                    k_proj,
                    v_proj,
                    o_proj,
                    n_heads: c.num_attention_heads,
                    n_kv_heads: c.num_key_value_heads,
                    head_dim: c.head_dim,
                },
                post_attention_layernorm: RmsNorm::load(&mut l, &format!("{p}.post_attention_layernorm"), d, eps)?,
                mlp: Mlp { gate_proj, up_proj, down_proj },
            });
        }
        let norm = RmsNorm::load(&mut l, "model.norm", d, eps)?;
        let lm_head = if c.tie_word_embeddings { None } else { Some(l.matrix("lm_head.weight", [c.vocab_size, d])?) };
        Ok(Self { config, embed_tokens, layers, norm, lm_head })
    }

    pub fn device(&self) -> Device {
        self.embed_tokens.device()
    }

    /// Logits `[B, S, V]` for token ids `[B, S]`. `mask` is the attention mask from
    /// [`super::attention_mask`]; with a cache, positions continue after the cached ones.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Option<&Mask>, cache: Option<&mut KvCache>) -> Tensor<3> {
        vocab_logits(self.hidden(ids, mask, cache), self.head())
    }

    /// The LM head `[V, d]`: its own weight, or the embedding table when tied.
    pub fn head(&self) -> Tensor<2> {
        self.lm_head.clone().unwrap_or_else(|| self.embed_tokens.clone())
    }

    /// The final hidden states `[B, S, d]` the head reads (see [`Llama::forward`]).
    pub fn hidden(&self, ids: Tensor<2, Int>, mask: Option<&Mask>, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        let [_, s] = ids.dims();
        let start = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let device = ids.device();
        let rotary = Rotary::new(&self.config, start, s, &device);
        let mut x = embedding(self.embed_tokens.clone(), ids);
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| c.layer(i, self.layers.len()));
            let h = layer.self_attn.forward(layer.input_layernorm.forward(x.clone()), &rotary, mask, slot);
            x = x + h;
            x = x.clone() + layer.mlp.forward(layer.post_attention_layernorm.forward(x));
        }
        self.norm.forward(x)
    }
}

impl Block {
    /// The seven linear layers with their names inside the block, in execution order.
    fn linears(&self) -> [(&'static str, &Linear); 7] {
        let (a, m) = (&self.self_attn, &self.mlp);
        [
            ("self_attn.q_proj", &a.q_proj),
            ("self_attn.k_proj", &a.k_proj),
            ("self_attn.v_proj", &a.v_proj),
            ("self_attn.o_proj", &a.o_proj),
            ("mlp.gate_proj", &m.gate_proj),
            ("mlp.up_proj", &m.up_proj),
            ("mlp.down_proj", &m.down_proj),
        ]
    }

    fn linears_mut(&mut self) -> [(&'static str, &mut Linear); 7] {
        let (a, m) = (&mut self.self_attn, &mut self.mlp);
        [
            ("self_attn.q_proj", &mut a.q_proj),
            ("self_attn.k_proj", &mut a.k_proj),
            ("self_attn.v_proj", &mut a.v_proj),
            ("self_attn.o_proj", &mut a.o_proj),
            ("mlp.gate_proj", &mut m.gate_proj),
            ("mlp.up_proj", &mut m.up_proj),
            ("mlp.down_proj", &mut m.down_proj),
        ]
    }
}

impl Parameters for Llama {
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_>)) {
        f("model.embed_tokens.weight", ParamRef::Matrix(&self.embed_tokens));
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            l.input_layernorm.visit(f, &format!("{p}.input_layernorm"));
            l.post_attention_layernorm.visit(f, &format!("{p}.post_attention_layernorm"));
            for (name, lin) in l.linears() {
                lin.visit(f, &format!("{p}.{name}"));
            }
        }
        self.norm.visit(f, "model.norm");
        if let Some(head) = &self.lm_head {
            f("lm_head.weight", ParamRef::Matrix(head));
        }
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        f("model.embed_tokens.weight", ParamMut::Matrix(&mut self.embed_tokens));
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = format!("model.layers.{i}");
            l.input_layernorm.visit_mut(f, &format!("{p}.input_layernorm"));
            l.post_attention_layernorm.visit_mut(f, &format!("{p}.post_attention_layernorm"));
            for (name, lin) in l.linears_mut() {
                lin.visit_mut(f, &format!("{p}.{name}"));
            }
        }
        self.norm.visit_mut(f, "model.norm");
        if let Some(head) = &mut self.lm_head {
            f("lm_head.weight", ParamMut::Matrix(head));
        }
    }
}

impl Llama {
    /// The execution-ordered op graph (input -> output) the FLOPs profiler works on. The config
    /// fixes every shape, bias and the head's tying (`load` reads exactly those), so it is
    /// [`llama_ops`] of the config.
    pub fn op_graph(&self) -> Vec<OpSpec> {
        llama_ops(&self.config)
    }
}

impl Linears for Llama {
    fn linears(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            out.extend(l.linears().into_iter().map(|(name, lin)| (format!("model.layers.{i}.{name}"), lin)));
        }
        out
    }

    fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, l) in self.layers.iter_mut().enumerate() {
            out.extend(l.linears_mut().into_iter().map(|(name, lin)| (format!("model.layers.{i}.{name}"), lin)));
        }
        out
    }
}
