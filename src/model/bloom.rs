//! BLOOM and BLOOMZ as in HF transformers' `modeling_bloom` (`BloomForCausalLM`): an embedding
//! LayerNorm, ALiBi attention biases instead of position embeddings, a fused query_key_value
//! projection, a tanh-approximated GELU MLP of width 4 x hidden, LayerNorms with bias and a head
//! tied to the word embeddings.
//!
//! Weights keep HF's layout and names. In `query_key_value.weight` (`[3 * hidden, hidden]`) the
//! output rows are grouped per head: rows `h * 3 * head_dim ..` hold head h's query, key and value
//! (`head_dim` rows each), so one head's row block is `3 * head_dim` rows, not `head_dim`.

use burn::tensor::activation::softmax;
use burn::tensor::module::embedding;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Deserialize;
use serde_json::Value;

use super::cache::{KvCache, LayerCache};
use super::linear::{Linear, Linears};
use super::llama::TensorSource;
use super::params::{ParamMut, ParamRef, Parameters};
use crate::error::{Error, Result};
use crate::profile::{OpKind, OpSpec, TensorRole};

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
        let raw: Value = serde_json::from_str(text).map_err(|e| Error::invalid(origin, format!("not valid JSON: {e}")))?;
        Self::from_value(raw, origin)
    }

    pub fn from_value(raw: Value, origin: &str) -> Result<Self> {
        let c: RawConfig =
            serde_json::from_value(raw.clone()).map_err(|e| Error::invalid(origin, format!("not a BLOOM config.json: {e}")))?;
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
        if hidden_size == 0 || n_layer == 0 || n_head == 0 || c.vocab_size == 0 {
            return Err(Error::invalid(origin, "hidden_size, n_layer, n_head and vocab_size must be > 0"));
        }
        if !hidden_size.is_multiple_of(n_head) {
            return Err(Error::invalid(origin, format!("hidden_size {hidden_size} is not a multiple of n_head {n_head}")));
        }
        Ok(Self {
            hidden_size,
            n_layer,
            n_head,
            vocab_size: c.vocab_size,
            layer_norm_epsilon: c.layer_norm_epsilon.unwrap_or(1e-5),
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

fn first_id(v: &Value) -> Option<u32> {
    match v {
        Value::Number(n) => n.as_u64().map(|n| n as u32),
        Value::Array(a) => a.first().and_then(first_id),
        _ => None,
    }
}

fn all_ids(v: &Value) -> Vec<u32> {
    match v {
        Value::Array(a) => a.iter().filter_map(first_id).collect(),
        other => first_id(other).into_iter().collect(),
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

/// The additive ALiBi bias `[1, heads, 1, keys]`: `slope * j` for key position j.
///
/// transformers numbers keys by the attention mask's cumulative sum (padding counts as 0). With
/// left or right padding that differs from `j` by a constant per row, which softmax ignores, and
/// padded keys are masked out either way; only padding between real tokens would differ.
fn alibi(slopes: &[f32], keys: usize, device: &Device) -> Tensor<4> {
    let values: Vec<f32> = slopes.iter().flat_map(|&m| (0..keys).map(move |j| m * j as f32)).collect();
    Tensor::from_data(TensorData::new(values, [1, slopes.len(), 1, keys]), device)
}

/// BLOOM's GELU: the tanh approximation with transformers' rounded constant for sqrt(2/pi).
fn bloom_gelu(x: Tensor<3>) -> Tensor<3> {
    let inner = x.clone() * x.clone().square().mul_scalar(0.044715).add_scalar(1.0).mul_scalar(0.79788456);
    x.mul_scalar(0.5) * inner.tanh().add_scalar(1.0)
}

#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Tensor<1>,
    pub bias: Tensor<1>,
    pub eps: f64,
}

impl LayerNorm {
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let centered = x.clone() - x.mean_dim(2);
        let inv_std = centered.clone().square().mean_dim(2).add_scalar(self.eps).sqrt().recip();
        centered * inv_std * self.weight.clone().unsqueeze::<3>() + self.bias.clone().unsqueeze::<3>()
    }
}

#[derive(Clone, Debug)]
pub struct Attention {
    pub query_key_value: Linear,
    pub dense: Linear,
    n_heads: usize,
    head_dim: usize,
}

impl Attention {
    /// `alibi` covers every key, cached ones included.
    fn forward(&self, x: Tensor<3>, alibi: &Tensor<4>, mask: Option<&Tensor<4>>, cache: Option<&mut LayerCache>) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let hd = self.head_dim;
        let qkv = self.query_key_value.forward(x).reshape([b, s, self.n_heads, 3 * hd]);
        let part = |i: usize| qkv.clone().narrow(3, i * hd, hd).swap_dims(1, 2);
        let (q, mut k, mut v) = (part(0), part(1), part(2));
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.take() {
                k = Tensor::cat(vec![pk, k], 2);
                v = Tensor::cat(vec![pv, v], 2);
            }
            *slot = Some((k.clone(), v.clone()));
        }
        let scale = (hd as f64).powf(-0.5);
        let mut scores = q.matmul(k.swap_dims(2, 3)).mul_scalar(scale) + alibi.clone();
        if let Some(mask) = mask {
            scores = scores + mask.clone();
        }
        let out = softmax(scores, 3).matmul(v);
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
        alibi: &Tensor<4>,
        mask: Option<&Tensor<4>>,
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

    /// The four linear layers with their names inside the block, in execution order.
    fn linears(&self) -> [(&'static str, &Linear); 4] {
        let (a, m) = (&self.self_attention, &self.mlp);
        [
            ("self_attention.query_key_value", &a.query_key_value),
            ("self_attention.dense", &a.dense),
            ("mlp.dense_h_to_4h", &m.dense_h_to_4h),
            ("mlp.dense_4h_to_h", &m.dense_4h_to_h),
        ]
    }

    fn linears_mut(&mut self) -> [(&'static str, &mut Linear); 4] {
        let (a, m) = (&mut self.self_attention, &mut self.mlp);
        [
            ("self_attention.query_key_value", &mut a.query_key_value),
            ("self_attention.dense", &mut a.dense),
            ("mlp.dense_h_to_4h", &mut m.dense_h_to_4h),
            ("mlp.dense_4h_to_h", &mut m.dense_4h_to_h),
        ]
    }
}

fn read_vector(source: &mut TensorSource<'_>, name: &str, len: usize, device: &Device) -> Result<Tensor<1>> {
    Ok(Tensor::from_data(TensorData::new(source(name, &[len])?, [len]), device))
}

fn read_matrix(source: &mut TensorSource<'_>, name: &str, shape: [usize; 2], device: &Device) -> Result<Tensor<2>> {
    Ok(Tensor::from_data(TensorData::new(source(name, &shape)?, shape), device))
}

fn read_layer_norm(source: &mut TensorSource<'_>, prefix: &str, dim: usize, eps: f64, device: &Device) -> Result<LayerNorm> {
    let weight = read_vector(source, &format!("{prefix}.weight"), dim, device)?;
    Ok(LayerNorm { weight, bias: read_vector(source, &format!("{prefix}.bias"), dim, device)?, eps })
}

/// Every BLOOM linear layer has a bias.
fn read_linear(source: &mut TensorSource<'_>, prefix: &str, d_out: usize, d_in: usize, device: &Device) -> Result<Linear> {
    let weight = read_matrix(source, &format!("{prefix}.weight"), [d_out, d_in], device)?;
    Ok(Linear::new(weight, Some(read_vector(source, &format!("{prefix}.bias"), d_out, device)?)))
}

#[derive(Clone, Debug)]
pub struct Bloom {
    pub config: BloomConfig,
    pub word_embeddings: Tensor<2>,
    pub word_embeddings_layernorm: LayerNorm,
    pub h: Vec<Block>,
    pub ln_f: LayerNorm,
    /// `None` when tied to `word_embeddings`.
    pub lm_head: Option<Tensor<2>>,
}

impl Bloom {
    /// Builds the model, asking `source` for every parameter in HF order.
    pub fn load(config: BloomConfig, device: &Device, source: &mut TensorSource<'_>) -> Result<Self> {
        let c = &config;
        let (d, vocab, eps) = (c.hidden_size, c.vocab_size, c.layer_norm_epsilon);
        let word_embeddings = read_matrix(source, "transformer.word_embeddings.weight", [vocab, d], device)?;
        let word_embeddings_layernorm = read_layer_norm(source, "transformer.word_embeddings_layernorm", d, eps, device)?;
        let mut h = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let p = format!("transformer.h.{i}");
            let input_layernorm = read_layer_norm(source, &format!("{p}.input_layernorm"), d, eps, device)?;
            let query_key_value = read_linear(source, &format!("{p}.self_attention.query_key_value"), 3 * d, d, device)?;
            let dense = read_linear(source, &format!("{p}.self_attention.dense"), d, d, device)?;
            let post_attention_layernorm = read_layer_norm(source, &format!("{p}.post_attention_layernorm"), d, eps, device)?;
            let dense_h_to_4h = read_linear(source, &format!("{p}.mlp.dense_h_to_4h"), 4 * d, d, device)?;
            let dense_4h_to_h = read_linear(source, &format!("{p}.mlp.dense_4h_to_h"), d, 4 * d, device)?;
            h.push(Block {
                input_layernorm,
                self_attention: Attention { query_key_value, dense, n_heads: c.n_head, head_dim: c.head_dim() },
                post_attention_layernorm,
                mlp: Mlp { dense_h_to_4h, dense_4h_to_h },
            });
        }
        let ln_f = read_layer_norm(source, "transformer.ln_f", d, eps, device)?;
        let lm_head = if c.tie_word_embeddings { None } else { Some(read_matrix(source, "lm_head.weight", [vocab, d], device)?) };
        Ok(Self { config, word_embeddings, word_embeddings_layernorm, h, ln_f, lm_head })
    }

    pub fn device(&self) -> Device {
        self.word_embeddings.device()
    }

    /// Logits `[B, S, V]` for token ids `[B, S]`. `mask` is the additive attention mask from
    /// [`super::attention_mask`]; with a cache, positions continue after the cached ones.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Option<&Tensor<4>>, mut cache: Option<&mut KvCache>) -> Tensor<3> {
        let [_, s] = ids.dims();
        let past = cache.as_ref().map(|c| c.len()).unwrap_or(0);
        let alibi = alibi(&alibi_slopes(self.config.n_head), past + s, &ids.device());
        let mut x = self.word_embeddings_layernorm.forward(embedding(self.word_embeddings.clone(), ids));
        let post = self.config.apply_residual_connection_post_layernorm;
        for (i, block) in self.h.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| c.layer(i, self.h.len()));
            x = block.forward(x, &alibi, mask, slot, post);
        }
        let x = self.ln_f.forward(x);
        let [b, s, d] = x.dims();
        let head = self.lm_head.clone().unwrap_or_else(|| self.word_embeddings.clone());
        let vocab = head.dims()[0];
        x.reshape([b * s, d]).matmul(head.transpose()).reshape([b, s, vocab])
    }

    /// The execution-ordered op graph (input -> output) the FLOPs profiler works on, read off the
    /// model's own tensors. For head-sized row blocks, `query_key_value` needs `3 * head_dim` rows
    /// per head (see the module docs).
    pub fn op_graph(&self) -> Vec<OpSpec> {
        let [vocab, dim] = self.word_embeddings.dims();
        let mut ops = vec![embedding_op(vocab, dim)];
        let norm = |ops: &mut Vec<OpSpec>, prefix: &str, ln: &LayerNorm, layer| {
            layer_norm_ops(ops, prefix, ln.weight.dims()[0], layer);
        };
        let linear = |ops: &mut Vec<OpSpec>, prefix: String, lin: &Linear, layer, role| {
            let [d_out, d_in] = lin.weight.dims();
            linear_ops(ops, &prefix, d_in, d_out, lin.bias.is_some(), layer, role);
        };
        norm(&mut ops, "transformer.word_embeddings_layernorm", &self.word_embeddings_layernorm, None);
        for (i, l) in self.h.iter().enumerate() {
            let p = format!("transformer.h.{i}");
            let a = &l.self_attention;
            norm(&mut ops, &format!("{p}.input_layernorm"), &l.input_layernorm, Some(i));
            linear(&mut ops, format!("{p}.self_attention.query_key_value"), &a.query_key_value, Some(i), TensorRole::Qkv);
            ops.push(attention_core_op(&p, a.n_heads, a.head_dim, i));
            linear(&mut ops, format!("{p}.self_attention.dense"), &a.dense, Some(i), TensorRole::O);
            norm(&mut ops, &format!("{p}.post_attention_layernorm"), &l.post_attention_layernorm, Some(i));
            linear(&mut ops, format!("{p}.mlp.dense_h_to_4h"), &l.mlp.dense_h_to_4h, Some(i), TensorRole::Fc1);
            linear(&mut ops, format!("{p}.mlp.dense_4h_to_h"), &l.mlp.dense_4h_to_h, Some(i), TensorRole::Fc2);
        }
        norm(&mut ops, "transformer.ln_f", &self.ln_f, None);
        ops.push(lm_head_op(vocab, dim, self.lm_head.is_none()));
        ops
    }
}

// Op builders shared with `profile::bloom`, so the config-derived graph names ops identically.

pub(crate) fn embedding_op(vocab: usize, dim: usize) -> OpSpec {
    OpSpec {
        name: "transformer.word_embeddings.weight".into(),
        kind: OpKind::Embedding { vocab, dim },
        layer: None,
        role: TensorRole::Embedding,
    }
}

/// A LayerNorm: its weight (`Norm`) then its bias (`NormBias`).
pub(crate) fn layer_norm_ops(ops: &mut Vec<OpSpec>, prefix: &str, dim: usize, layer: Option<usize>) {
    ops.push(OpSpec { name: format!("{prefix}.weight"), kind: OpKind::Norm { dim }, layer, role: TensorRole::Norm });
    ops.push(OpSpec { name: format!("{prefix}.bias"), kind: OpKind::NormBias { dim }, layer, role: TensorRole::Norm });
}

/// A linear weight and, when present, its bias, both with the linear's role.
pub(crate) fn linear_ops(
    ops: &mut Vec<OpSpec>,
    prefix: &str,
    d_in: usize,
    d_out: usize,
    bias: bool,
    layer: Option<usize>,
    role: TensorRole,
) {
    ops.push(OpSpec { name: format!("{prefix}.weight"), kind: OpKind::Linear { d_in, d_out }, layer, role });
    if bias {
        ops.push(OpSpec { name: format!("{prefix}.bias"), kind: OpKind::Bias { dim: d_out }, layer, role });
    }
}

pub(crate) fn attention_core_op(prefix: &str, n_heads: usize, head_dim: usize, layer: usize) -> OpSpec {
    OpSpec {
        name: format!("{prefix}.self_attention.core"),
        kind: OpKind::AttentionCore { n_heads, head_dim, causal: true },
        layer: Some(layer),
        role: TensorRole::Other,
    }
}

pub(crate) fn lm_head_op(vocab: usize, dim: usize, tied: bool) -> OpSpec {
    let name = if tied { "lm_head (tied to transformer.word_embeddings.weight)" } else { "lm_head.weight" };
    OpSpec { name: name.into(), kind: OpKind::LmHead { vocab, dim, tied }, layer: None, role: TensorRole::LmHead }
}

impl Parameters for Bloom {
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_>)) {
        let norm = |f: &mut dyn FnMut(&str, ParamRef<'_>), prefix: &str, ln: &LayerNorm| {
            f(&format!("{prefix}.weight"), ParamRef::Vector(&ln.weight));
            f(&format!("{prefix}.bias"), ParamRef::Vector(&ln.bias));
        };
        f("transformer.word_embeddings.weight", ParamRef::Matrix(&self.word_embeddings));
        norm(f, "transformer.word_embeddings_layernorm", &self.word_embeddings_layernorm);
        for (i, l) in self.h.iter().enumerate() {
            let p = format!("transformer.h.{i}");
            norm(f, &format!("{p}.input_layernorm"), &l.input_layernorm);
            l.self_attention.query_key_value.visit(f, &format!("{p}.self_attention.query_key_value"));
            l.self_attention.dense.visit(f, &format!("{p}.self_attention.dense"));
            norm(f, &format!("{p}.post_attention_layernorm"), &l.post_attention_layernorm);
            l.mlp.dense_h_to_4h.visit(f, &format!("{p}.mlp.dense_h_to_4h"));
            l.mlp.dense_4h_to_h.visit(f, &format!("{p}.mlp.dense_4h_to_h"));
        }
        norm(f, "transformer.ln_f", &self.ln_f);
        if let Some(head) = &self.lm_head {
            f("lm_head.weight", ParamRef::Matrix(head));
        }
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        let norm = |f: &mut dyn FnMut(&str, ParamMut<'_>), prefix: &str, ln: &mut LayerNorm| {
            f(&format!("{prefix}.weight"), ParamMut::Vector(&mut ln.weight));
            f(&format!("{prefix}.bias"), ParamMut::Vector(&mut ln.bias));
        };
        f("transformer.word_embeddings.weight", ParamMut::Matrix(&mut self.word_embeddings));
        norm(f, "transformer.word_embeddings_layernorm", &mut self.word_embeddings_layernorm);
        for (i, l) in self.h.iter_mut().enumerate() {
            let p = format!("transformer.h.{i}");
            norm(f, &format!("{p}.input_layernorm"), &mut l.input_layernorm);
            l.self_attention.query_key_value.visit_mut(f, &format!("{p}.self_attention.query_key_value"));
            l.self_attention.dense.visit_mut(f, &format!("{p}.self_attention.dense"));
            norm(f, &format!("{p}.post_attention_layernorm"), &mut l.post_attention_layernorm);
            l.mlp.dense_h_to_4h.visit_mut(f, &format!("{p}.mlp.dense_h_to_4h"));
            l.mlp.dense_4h_to_h.visit_mut(f, &format!("{p}.mlp.dense_4h_to_h"));
        }
        norm(f, "transformer.ln_f", &mut self.ln_f);
        if let Some(head) = &mut self.lm_head {
            f("lm_head.weight", ParamMut::Matrix(head));
        }
    }
}

impl Linears for Bloom {
    fn linears(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::new();
        for (i, l) in self.h.iter().enumerate() {
            out.extend(l.linears().into_iter().map(|(name, lin)| (format!("transformer.h.{i}.{name}"), lin)));
        }
        out
    }

    fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, l) in self.h.iter_mut().enumerate() {
            out.extend(l.linears_mut().into_iter().map(|(name, lin)| (format!("transformer.h.{i}.{name}"), lin)));
        }
        out
    }
}
