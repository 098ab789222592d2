//! T5 as in HF transformers' `modeling_t5` (`T5ForConditionalGeneration`): T5 v1.1 and FLAN-T5
//! (gated-GELU feed-forward) and the original T5 (ReLU).
//!
//! An encoder and a decoder stack over one `shared` embedding table. Each stack normalises with T5's
//! LayerNorm (RMS, no mean, no bias) before every sub-layer and once at its end. Attention has no
//! `1/sqrt(d_kv)` factor (T5 folds it into its initialisation) and no position embeddings: a learned
//! bias per relative-position bucket and head, owned by the stack's first block and shared by all
//! its blocks, is added to the scores (bidirectional buckets in the encoder, causal ones in the
//! decoder). Decoder blocks attend to the encoder output between self-attention and feed-forward.
//!
//! The cross-attention keys and values of every decoder layer are computed from the encoder output
//! before the decoder runs (what incremental decoding keeps in [`T5Cache`]); that is also the order
//! of [`T5::op_graph`] and of the parameters, see `crate::profile` for why it matters.

use std::sync::Arc;

use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Deserialize;
use serde_json::Value;

use super::attention::{Bias, Mask, attend, attention_mask, padding_mask};
use super::cache::{KvCache, extend};
use super::config::{check_positive, check_sizes, check_token_ids, deserialize};
use super::graph::{OpSpec, Stream, TensorRole};
use super::linear::{Linear, vocab_logits};
use super::loader::{Loader, TensorSource};
use super::loss::IGNORE_INDEX;
use super::norm::RmsNorm;
use super::params::{ModuleMut, Parameters, Table};
use crate::error::{Error, Result};

/// The feed-forward variants of `feed_forward_proj` this engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedForwardProj {
    /// Original T5: `wo(relu(wi x))`.
    Relu,
    /// T5 v1.1 / FLAN-T5: `wo(gelu_new(wi_0 x) * wi_1 x)`, GELU's tanh approximation.
    GatedGelu,
}

/// The fields of a T5 `config.json` the engine needs; `raw` keeps the whole file for export.
#[derive(Debug, Clone)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub d_kv: usize,
    pub d_ff: usize,
    pub num_layers: usize,
    pub num_decoder_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    pub layer_norm_epsilon: f64,
    pub feed_forward_proj: FeedForwardProj,
    /// The file's flag. transformers 5 writes `true` even for FLAN-T5, whose checkpoint carries its
    /// own `lm_head.weight`; [`T5::load`] lets the checkpoint decide (see there).
    pub tie_word_embeddings: bool,
    /// Multiply the decoder output by `d_model^-0.5` before the head: `scale_decoder_outputs`
    /// (transformers >= 5), else `tie_word_embeddings` as older transformers did (original T5 yes,
    /// T5 v1.1 and FLAN-T5 no).
    pub scale_decoder_outputs: bool,
    pub decoder_start_token_id: u32,
    pub eos_token_ids: Vec<u32>,
    pub pad_token_id: u32,
    pub raw: Value,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    vocab_size: usize,
    d_model: usize,
    d_kv: usize,
    d_ff: usize,
    num_layers: usize,
    num_decoder_layers: Option<usize>,
    num_heads: usize,
    relative_attention_num_buckets: Option<usize>,
    relative_attention_max_distance: Option<usize>,
    layer_norm_epsilon: Option<f64>,
    feed_forward_proj: Option<String>,
    tie_word_embeddings: Option<bool>,
    scale_decoder_outputs: Option<bool>,
    decoder_start_token_id: Option<u32>,
    eos_token_id: Option<Value>,
    pad_token_id: Option<u32>,
}

impl T5Config {
    /// Parses a config.json text; `origin` names the file in errors.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        let raw: Value = serde_json::from_str(text).map_err(|e| Error::invalid(origin, format!("not valid JSON: {e}")))?;
        Self::from_value(raw, origin)
    }

    /// Defaults are those of transformers' `T5Config`.
    pub fn from_value(raw: Value, origin: &str) -> Result<Self> {
        let c: RawConfig = deserialize(&raw, origin, "a T5 config.json")?;
        let model_type = c.model_type.unwrap_or_default();
        if model_type != "t5" {
            return Err(Error::Unsupported { path: origin.into(), what: format!("model_type {model_type:?}"), supported: "t5".into() });
        }
        let proj = c.feed_forward_proj.unwrap_or_else(|| "relu".into());
        let feed_forward_proj = match proj.as_str() {
            "relu" => FeedForwardProj::Relu,
            "gated-gelu" => FeedForwardProj::GatedGelu,
            other => {
                return Err(Error::Unsupported {
                    path: origin.into(),
                    what: format!("feed_forward_proj {other:?}"),
                    supported: "relu, gated-gelu".into(),
                });
            }
        };
        let num_decoder_layers = c.num_decoder_layers.unwrap_or(c.num_layers);
        check_sizes(
            origin,
            &[
                ("vocab_size", c.vocab_size),
                ("d_model", c.d_model),
                ("d_kv", c.d_kv),
                ("d_ff", c.d_ff),
                ("num_heads", c.num_heads),
                ("num_layers", c.num_layers),
                ("num_decoder_layers", num_decoder_layers),
            ],
        )?;
        let buckets = c.relative_attention_num_buckets.unwrap_or(32);
        let max_distance = c.relative_attention_max_distance.unwrap_or(128);
        // Bidirectional buckets split in two halves, each with an exact and a logarithmic range.
        if buckets < 4 || max_distance <= buckets / 2 {
            return Err(Error::invalid(
                origin,
                format!(
                    "relative_attention_num_buckets {buckets} must be >= 4 and relative_attention_max_distance {max_distance} above half of it"
                ),
            ));
        }
        let tie_word_embeddings = c.tie_word_embeddings.unwrap_or(true);
        let pad_token_id = c.pad_token_id.unwrap_or(0);
        let eos_token_ids = match &c.eos_token_id {
            None => vec![1],
            Some(v) => ids(v).ok_or_else(|| Error::invalid(origin, format!("eos_token_id {v} is not a token id or a list of them")))?,
        };
        let layer_norm_epsilon = c.layer_norm_epsilon.unwrap_or(1e-6);
        check_positive(origin, "layer_norm_epsilon", layer_norm_epsilon)?;
        check_token_ids(&raw, c.vocab_size, origin)?;
        Ok(Self {
            vocab_size: c.vocab_size,
            d_model: c.d_model,
            d_kv: c.d_kv,
            d_ff: c.d_ff,
            num_layers: c.num_layers,
            num_decoder_layers,
            num_heads: c.num_heads,
            relative_attention_num_buckets: buckets,
            relative_attention_max_distance: max_distance,
            layer_norm_epsilon,
            feed_forward_proj,
            tie_word_embeddings,
            scale_decoder_outputs: c.scale_decoder_outputs.unwrap_or(tie_word_embeddings),
            decoder_start_token_id: c.decoder_start_token_id.unwrap_or(pad_token_id),
            eos_token_ids,
            pad_token_id,
            raw,
        })
    }

    /// Width of the attention projections: `num_heads * d_kv`.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }
}

fn ids(v: &Value) -> Option<Vec<u32>> {
    match v {
        Value::Array(a) => a.iter().map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok())).collect(),
        other => Some(vec![u32::try_from(other.as_u64()?).ok()?]),
    }
}

/// transformers' `_relative_position_bucket` of `relative = key - query`, in f32 like torch, so the
/// logarithmic buckets fall on the same side of each boundary.
pub fn relative_position_bucket(relative: i64, bidirectional: bool, num_buckets: usize, max_distance: usize) -> i64 {
    let (mut buckets, mut offset) = (num_buckets as i64, 0);
    let distance = if bidirectional {
        buckets /= 2;
        if relative > 0 {
            offset = buckets;
        }
        relative.abs()
    } else {
        (-relative).max(0)
    };
    let max_exact = buckets / 2;
    if distance < max_exact {
        return offset + distance;
    }
    let log_ratio = (distance as f32 / max_exact as f32).ln() / ((max_distance as f64 / max_exact as f64).ln() as f32);
    offset + (max_exact + (log_ratio * (buckets - max_exact) as f32) as i64).min(buckets - 1)
}

#[derive(Clone, Debug)]
pub struct Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    n_heads: usize,
    d_kv: usize,
}

impl Attention {
    fn heads(&self, t: Tensor<3>) -> Tensor<4> {
        let [b, s, _] = t.dims();
        t.reshape([b, s, self.n_heads, self.d_kv]).swap_dims(1, 2)
    }

    /// Keys and values `[B, heads, S, d_kv]` of `x`.
    fn keys_values(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        (self.heads(self.k.forward(x.clone())), self.heads(self.v.forward(x)))
    }

    /// `o(softmax(q k^T + bias, mask) v)`, without T5's absent `1/sqrt(d_kv)`.
    fn attend(&self, x: Tensor<3>, k: Tensor<4>, v: Tensor<4>, mask: Option<&Mask>, bias: Bias<'_>) -> Tensor<3> {
        let [b, s, _] = x.dims();
        let q = self.heads(self.q.forward(x));
        let out = attend(q, k, v, mask, 1.0, bias);
        self.o.forward(out.swap_dims(1, 2).reshape([b, s, self.n_heads * self.d_kv]))
    }
}

/// `DenseReluDense`: `wo(relu(wi x))`, or gated `wo(gelu_new(wi_0 x) * wi_1 x)`.
#[derive(Clone, Debug)]
pub struct FeedForward {
    /// `wi`, or `wi_0` (the activated branch) when gated.
    pub wi: Linear,
    /// `wi_1`, the linear branch of a gated layer.
    pub wi_1: Option<Linear>,
    pub wo: Linear,
}

impl FeedForward {
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        match &self.wi_1 {
            None => self.wo.forward(relu(self.wi.forward(x))),
            Some(wi_1) => self.wo.forward(gelu_new(self.wi.forward(x.clone())) * wi_1.forward(x)),
        }
    }
}

/// transformers' `gelu_new`: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
fn gelu_new(x: Tensor<3>) -> Tensor<3> {
    let cube = x.clone() * x.clone() * x.clone();
    let inner = (x.clone() + cube.mul_scalar(0.044715)).mul_scalar((2.0 / std::f64::consts::PI).sqrt());
    x.mul_scalar(0.5) * inner.tanh().add_scalar(1.0)
}

/// One block: `layer.0` self-attention, in the decoder `layer.1` cross-attention, then the
/// feed-forward layer (`layer.1` in the encoder, `layer.2` in the decoder).
#[derive(Clone, Debug)]
pub struct Block {
    pub self_attn_norm: RmsNorm,
    pub self_attn: Attention,
    pub cross: Option<(RmsNorm, Attention)>,
    pub ff_norm: RmsNorm,
    pub ff: FeedForward,
}

/// An encoder or decoder stack.
#[derive(Clone, Debug)]
pub struct Stack {
    pub blocks: Vec<Block>,
    /// `[buckets, heads]`, stored in block 0 under HF's name and used by every block.
    pub relative_attention_bias: Table,
    pub final_layer_norm: RmsNorm,
    name: &'static str,
}

impl Stack {
    /// The relative position bias `[1, heads, Q, K]` of queries at `past..past + q` over keys
    /// `0..past + q` (the encoder has no past).
    fn position_bias(&self, config: &T5Config, past: usize, q: usize, device: &Device) -> Tensor<4> {
        let bidirectional = self.name == "encoder";
        let (nb, md, keys) = (config.relative_attention_num_buckets, config.relative_attention_max_distance, past + q);
        let buckets: Vec<i64> = (past..keys)
            .flat_map(|i| (0..keys).map(move |j| relative_position_bucket(j as i64 - i as i64, bidirectional, nb, md)))
            .collect();
        let idx = Tensor::<2, Int>::from_data(TensorData::new(buckets, [q, keys]), device);
        self.relative_attention_bias.lookup(idx).permute([2, 0, 1]).unsqueeze::<4>()
    }
}

/// What the decoder reads of the encoder: every layer's cross-attention keys and values, and the
/// mask of the encoder's padding.
#[derive(Clone, Debug)]
struct CrossState {
    kv: Vec<(Tensor<4>, Tensor<4>)>,
    mask: Option<Mask>,
}

/// Incremental decoding state: the decoder's self-attention keys/values grow with each step; the
/// cross-attention keys/values (and the encoder padding mask) are computed once, on the first step.
/// A cache belongs to one encoder output.
#[derive(Clone, Debug, Default)]
pub struct T5Cache {
    self_attn: KvCache,
    cross: Option<CrossState>,
}

impl T5Cache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of decoded positions.
    pub fn len(&self) -> usize {
        self.self_attn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the given batch rows (beam search reorders hypotheses between steps), `rows` on
    /// the device and as `parents` on the host.
    pub fn select_rows(&mut self, rows: Tensor<1, Int>, parents: &[usize]) {
        self.self_attn.select_rows(rows.clone());
        if let Some(cross) = &mut self.cross {
            for (k, v) in &mut cross.kv {
                *k = k.clone().select(0, rows.clone());
                *v = v.clone().select(0, rows.clone());
            }
            cross.mask = cross.mask.take().map(|m| m.select_rows(parents));
        }
    }
}

/// Declares T5's modules on a [`Loader`], in the config's shapes.
struct T5Loader<'c, 's, 'a> {
    l: Loader<'s, 'a>,
    config: &'c T5Config,
}

impl T5Loader<'_, '_, '_> {
    fn norm(&mut self, prefix: &str) -> Result<RmsNorm> {
        self.l.rms_norm(prefix, self.config.d_model, self.config.layer_norm_epsilon)
    }

    /// T5's linear layers have no bias.
    fn linear(&mut self, prefix: &str, d_in: usize, d_out: usize, role: TensorRole) -> Result<Linear> {
        self.l.linear(prefix, d_in, d_out, false, role)
    }

    /// `{prefix}.q`, `.k` and `.v` (from the model width to the heads').
    fn query_key_value(&mut self, prefix: &str) -> Result<[Linear; 3]> {
        let (d, inner) = (self.config.d_model, self.config.inner_dim());
        let proj = |l: &mut Self, part: &str, role| l.linear(&format!("{prefix}.{part}"), d, inner, role);
        Ok([proj(self, "q", TensorRole::Q)?, proj(self, "k", TensorRole::K)?, proj(self, "v", TensorRole::V)?])
    }

    fn output(&mut self, prefix: &str) -> Result<Linear> {
        self.linear(&format!("{prefix}.o"), self.config.inner_dim(), self.config.d_model, TensorRole::O)
    }

    fn feed_forward(&mut self, prefix: &str) -> Result<FeedForward> {
        let (d, ff) = (self.config.d_model, self.config.d_ff);
        let wo = |l: &mut Self| l.linear(&format!("{prefix}.wo"), ff, d, TensorRole::Down);
        Ok(match self.config.feed_forward_proj {
            FeedForwardProj::Relu => {
                let wi = self.linear(&format!("{prefix}.wi"), d, ff, TensorRole::Up)?;
                FeedForward { wi, wi_1: None, wo: wo(self)? }
            }
            FeedForwardProj::GatedGelu => {
                let wi = self.linear(&format!("{prefix}.wi_0"), d, ff, TensorRole::Gate)?;
                let wi_1 = Some(self.linear(&format!("{prefix}.wi_1"), d, ff, TensorRole::Up)?);
                FeedForward { wi, wi_1, wo: wo(self)? }
            }
        })
    }

    /// `n_blocks` (>= 1, as the config guarantees) blocks, numbered from `first` in the graph, and
    /// the final norm. A decoder block attends to the encoder through the cross-attention keys and
    /// values in `cross_kv` (one pair per decoder block, none for the encoder), declared before the
    /// decoder because they read the encoder output.
    fn stack(&mut self, name: &'static str, n_blocks: usize, first: usize, cross_kv: Vec<(Linear, Linear)>) -> Result<Stack> {
        let c = self.config;
        let decoder = name == "decoder";
        debug_assert_eq!(cross_kv.len(), if decoder { n_blocks } else { 0 }, "one cross-attention per decoder block");
        let mut cross_kv = cross_kv.into_iter();
        // No capacity from the config's layer count: a corrupt count (2^63) would abort in the
        // allocation, while the first missing layer ends the load with an error.
        let mut blocks = Vec::new();
        let mut relative_attention_bias = None;
        for i in 0..n_blocks {
            let p = format!("{name}.block.{i}.layer");
            self.l.block(Some(first + i));
            let self_attn_norm = self.norm(&format!("{p}.0.layer_norm"))?;
            let a = format!("{p}.0.SelfAttention");
            let [q, k, v] = self.query_key_value(&a)?;
            if i == 0 {
                let bias = format!("{a}.relative_attention_bias.weight");
                relative_attention_bias =
                    Some(self.l.relative_bias(&bias, c.relative_attention_num_buckets, c.num_heads, n_blocks, decoder)?);
            }
            self.l.attention_core(&a, c.num_heads, c.d_kv, decoder);
            let self_attn = Attention { q, k, v, o: self.output(&a)?, n_heads: c.num_heads, d_kv: c.d_kv };
            let cross = match cross_kv.next() {
                Some((k, v)) => {
                    let x = format!("{p}.1.EncDecAttention");
                    let norm = self.norm(&format!("{p}.1.layer_norm"))?;
                    let q = self.linear(&format!("{x}.q"), c.d_model, c.inner_dim(), TensorRole::Q)?;
                    self.l.cross_attention_core(&x, c.num_heads, c.d_kv);
                    Some((norm, Attention { q, k, v, o: self.output(&x)?, n_heads: c.num_heads, d_kv: c.d_kv }))
                }
                None => None,
            };
            let f = format!("{p}.{}", if decoder { 2 } else { 1 });
            let ff_norm = self.norm(&format!("{f}.layer_norm"))?;
            let ff = self.feed_forward(&format!("{f}.DenseReluDense"))?;
            blocks.push(Block { self_attn_norm, self_attn, cross, ff_norm, ff });
        }
        self.l.block(None);
        let final_layer_norm = self.norm(&format!("{name}.final_layer_norm"))?;
        let relative_attention_bias = relative_attention_bias.expect("T5Config refuses stacks without blocks");
        Ok(Stack { blocks, relative_attention_bias, final_layer_norm, name })
    }
}

#[derive(Clone, Debug)]
pub struct T5 {
    pub config: T5Config,
    /// `[vocab, d_model]`, read by both stacks (HF's `encoder.embed_tokens` and `decoder.embed_tokens`
    /// are aliases of it).
    pub shared: Table,
    pub encoder: Stack,
    pub decoder: Stack,
    /// `None` when tied to `shared`.
    pub lm_head: Option<Table>,
    /// The op graph recorded while loading: block `layer`s count through both stacks (encoder blocks
    /// `0..num_layers`, decoder blocks after them); the decoder stack runs on [`Stream::Decoder`],
    /// the cross-attention keys/values, which read the encoder output, on [`Stream::Input`].
    graph: Arc<[OpSpec]>,
}

/// The op graph of a T5 model from its config alone, which fixes every shape `load` reads: for
/// planning a run without weights. The head counts as tied when the config says so
/// (transformers 5 writes `tie_word_embeddings: true` even for FLAN-T5, whose checkpoint has its own
/// `lm_head.weight`: the totals are the same, only the node its weight gradient sits on differs);
/// a loaded model's graph ties it as loaded.
pub fn t5_ops(config: &T5Config) -> Vec<OpSpec> {
    T5::declare(config.clone(), Loader::planning()).expect("planning reads no file").op_graph()
}

impl T5 {
    /// Builds the model, asking `source` for every parameter. The head is `lm_head.weight` when the
    /// checkpoint has it; when it has not and `tie_word_embeddings` is set, the head is `shared`
    /// (transformers 5 ties only what the checkpoint lacks).
    pub fn load(config: T5Config, device: &Device, source: &mut TensorSource<'_>) -> Result<Self> {
        Self::declare(config, Loader::new(source, device))
    }

    /// Every parameter and weightless op in execution order: the one place their HF names are
    /// spelled.
    pub(crate) fn declare(config: T5Config, l: Loader<'_, '_>) -> Result<Self> {
        let mut l = T5Loader { l, config: &config };
        let (vocab, d, inner) = (config.vocab_size, config.d_model, config.inner_dim());
        let shared = l.l.embedding("shared.weight", vocab, d)?;
        let encoder = l.stack("encoder", config.num_layers, 0, Vec::new())?;
        // The cross-attention keys/values read the encoder output and run before the decoder.
        let mut cross_kv = Vec::new();
        for i in 0..config.num_decoder_layers {
            let x = format!("decoder.block.{i}.layer.1.EncDecAttention");
            l.l.block(Some(config.num_layers + i));
            let k = l.linear(&format!("{x}.k"), d, inner, TensorRole::K)?;
            cross_kv.push((k, l.linear(&format!("{x}.v"), d, inner, TensorRole::V)?));
        }
        l.l.stream(Stream::Decoder);
        let decoder = l.stack("decoder", config.num_decoder_layers, config.num_layers, cross_kv)?;
        let lm_head = l.l.lm_head_if_present(&shared.name, vocab, d, config.tie_word_embeddings)?;
        let graph = l.l.graph();
        Ok(Self { config, shared, encoder, decoder, lm_head, graph })
    }

    pub fn device(&self) -> Device {
        self.shared.weight.device()
    }

    /// The encoder output `[B, S, d_model]` for token ids `[B, S]`; `padding` is `[B, S]` row-major,
    /// 1 = real token (`None`: no padding).
    pub fn encode(&self, ids: Tensor<2, Int>, padding: Option<&[u32]>) -> Tensor<3> {
        let [b, s] = ids.dims();
        let bias = self.encoder.position_bias(&self.config, 0, s, &ids.device());
        let mask = padding.map(|p| padding_mask(p, b, s));
        let mut x = self.shared.lookup(ids);
        for block in &self.encoder.blocks {
            let h = block.self_attn_norm.forward(x.clone());
            let (k, v) = block.self_attn.keys_values(h.clone());
            x = x + block.self_attn.attend(h, k, v, mask.as_ref(), Bias::Dense(&bias));
            x = x.clone() + block.ff.forward(block.ff_norm.forward(x));
        }
        self.encoder.final_layer_norm.forward(x)
    }

    fn cross_state(&self, encoder_out: &Tensor<3>, padding: Option<&[u32]>) -> CrossState {
        let [b, s, _] = encoder_out.dims();
        let kv = self.decoder.blocks.iter().filter_map(|bl| bl.cross.as_ref()).map(|(_, a)| a.keys_values(encoder_out.clone())).collect();
        CrossState { kv, mask: padding.map(|p| padding_mask(p, b, s)) }
    }

    /// Logits `[B, T, vocab]` for decoder ids `[B, T]` attending to `encoder_out` (from [`T5::encode`];
    /// `encoder_padding` as given there). With a cache, positions continue after the cached ones and
    /// the encoder side is read from the cache once it holds it.
    pub fn decode(
        &self,
        encoder_out: &Tensor<3>,
        encoder_padding: Option<&[u32]>,
        decoder_ids: Tensor<2, Int>,
        cache: Option<&mut T5Cache>,
    ) -> Tensor<3> {
        vocab_logits(self.decode_hidden(encoder_out, encoder_padding, decoder_ids, cache), self.head())
    }

    /// The LM head `[V, d]`: its own weight, or `shared` when tied.
    pub fn head(&self) -> Tensor<2> {
        self.lm_head.as_ref().unwrap_or(&self.shared).weight.clone()
    }

    /// The decoder's final hidden states `[B, T, d]` the head reads, scaled as the head expects
    /// (see [`T5::decode`]).
    pub fn decode_hidden(
        &self,
        encoder_out: &Tensor<3>,
        encoder_padding: Option<&[u32]>,
        decoder_ids: Tensor<2, Int>,
        mut cache: Option<&mut T5Cache>,
    ) -> Tensor<3> {
        let [b, t] = decoder_ids.dims();
        let device = decoder_ids.device();
        let past = cache.as_ref().map_or(0, |c| c.len());
        let cross = match cache.as_deref_mut() {
            Some(c) => c.cross.get_or_insert_with(|| self.cross_state(encoder_out, encoder_padding)).clone(),
            None => self.cross_state(encoder_out, encoder_padding),
        };
        let bias = self.decoder.position_bias(&self.config, past, t, &device);
        let causal = attention_mask(None, b, t, past);
        let mut x = self.shared.lookup(decoder_ids);
        let n = self.decoder.blocks.len();
        for (i, (block, (ck, cv))) in self.decoder.blocks.iter().zip(cross.kv).enumerate() {
            let h = block.self_attn_norm.forward(x.clone());
            let (k, v) = block.self_attn.keys_values(h.clone());
            let (k, v) = extend(cache.as_deref_mut().map(|c| c.self_attn.layer(i, n)), k, v);
            x = x + block.self_attn.attend(h, k, v, Some(&causal), Bias::Dense(&bias));
            if let Some((norm, attn)) = &block.cross {
                x = x.clone() + attn.attend(norm.forward(x), ck, cv, cross.mask.as_ref(), Bias::None);
            }
            x = x.clone() + block.ff.forward(block.ff_norm.forward(x));
        }
        let mut x = self.decoder.final_layer_norm.forward(x);
        if self.config.scale_decoder_outputs {
            x = x.mul_scalar((self.config.d_model as f64).powf(-0.5));
        }
        x
    }

    /// Teacher-forced logits `[B, T, vocab]`: encodes `input_ids` (`padding` as in [`T5::encode`]) and
    /// decodes `decoder_input_ids` (see [`T5::shift_right`]).
    pub fn forward(&self, input_ids: Tensor<2, Int>, padding: Option<&[u32]>, decoder_input_ids: Tensor<2, Int>) -> Tensor<3> {
        vocab_logits(self.forward_hidden(input_ids, padding, decoder_input_ids), self.head())
    }

    /// [`T5::forward`]'s decoder hidden states `[B, T, d]`, before the head.
    pub fn forward_hidden(&self, input_ids: Tensor<2, Int>, padding: Option<&[u32]>, decoder_input_ids: Tensor<2, Int>) -> Tensor<3> {
        let encoder_out = self.encode(input_ids, padding);
        self.decode_hidden(&encoder_out, padding, decoder_input_ids, None)
    }

    /// Decoder inputs for `labels` (`[B, T]` row-major): each row shifted right behind
    /// `decoder_start_token_id`, ignored labels (-100) replaced by the pad id, as transformers'
    /// `_shift_right`.
    pub fn shift_right(&self, labels: &[i64], len: usize) -> Vec<i64> {
        let (start, pad) = (self.config.decoder_start_token_id as i64, self.config.pad_token_id as i64);
        labels
            .chunks(len.max(1))
            .flat_map(|row| std::iter::once(start).chain(row[..row.len().saturating_sub(1)].iter().copied()))
            .map(|id| if id == IGNORE_INDEX { pad } else { id })
            .collect()
    }
}

impl Stack {
    /// The stack's modules in declaration order, and separately its cross-attention keys/values,
    /// which the model declares before the decoder.
    fn modules_mut(&mut self) -> (Vec<ModuleMut<'_>>, Vec<ModuleMut<'_>>) {
        let (mut out, mut cross_kv) = (Vec::new(), Vec::new());
        let mut bias = Some(&mut self.relative_attention_bias);
        for b in &mut self.blocks {
            let a = &mut b.self_attn;
            out.push(ModuleMut::RmsNorm(&mut b.self_attn_norm));
            out.extend([&mut a.q, &mut a.k, &mut a.v].map(ModuleMut::Linear));
            out.extend(bias.take().map(ModuleMut::Table));
            out.push(ModuleMut::Linear(&mut a.o));
            if let Some((norm, x)) = &mut b.cross {
                cross_kv.extend([&mut x.k, &mut x.v].map(ModuleMut::Linear));
                out.extend([ModuleMut::RmsNorm(norm), ModuleMut::Linear(&mut x.q), ModuleMut::Linear(&mut x.o)]);
            }
            out.push(ModuleMut::RmsNorm(&mut b.ff_norm));
            out.push(ModuleMut::Linear(&mut b.ff.wi));
            out.extend(b.ff.wi_1.as_mut().map(ModuleMut::Linear));
            out.push(ModuleMut::Linear(&mut b.ff.wo));
        }
        out.push(ModuleMut::RmsNorm(&mut self.final_layer_norm));
        (out, cross_kv)
    }
}

impl Parameters for T5 {
    /// The order `load` declares them in: the encoder, the decoder's cross-attention keys/values,
    /// the decoder, an untied head.
    fn modules_mut(&mut self) -> Vec<ModuleMut<'_>> {
        let mut out = vec![ModuleMut::Table(&mut self.shared)];
        out.extend(self.encoder.modules_mut().0);
        let (decoder, cross_kv) = self.decoder.modules_mut();
        out.extend(cross_kv);
        out.extend(decoder);
        out.extend(self.lm_head.as_mut().map(ModuleMut::Table));
        out
    }
}

impl T5 {
    /// The execution-ordered op graph the FLOPs profiler works on, as `load` declared it.
    pub fn op_graph(&self) -> Vec<OpSpec> {
        self.graph.to_vec()
    }
}
