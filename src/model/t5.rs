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
//! of [`T5::op_graph`] and of [`Linears::linears`], see `crate::profile` for why it matters.

use burn::tensor::activation::relu;
use burn::tensor::module::embedding;
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Deserialize;
use serde_json::Value;

use super::attention::{Bias, Mask, attend, attention_mask, padding_mask};
use super::cache::{KvCache, extend};
use super::config::{check_positive, check_sizes, check_token_ids, deserialize};
use super::graph::{OpSpec, t5};
use super::linear::{Linear, Linears, vocab_logits};
use super::loader::{Loader, TensorSource};
use super::loss::IGNORE_INDEX;
use super::norm::RmsNorm;
use super::params::{ParamMut, ParamRef, Parameters};
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

    /// The linears with their HF names, in execution order.
    fn linears(&self) -> Vec<(&'static str, &Linear)> {
        match &self.wi_1 {
            None => vec![("wi", &self.wi), ("wo", &self.wo)],
            Some(wi_1) => vec![("wi_0", &self.wi), ("wi_1", wi_1), ("wo", &self.wo)],
        }
    }

    fn linears_mut(&mut self) -> Vec<(&'static str, &mut Linear)> {
        match &mut self.wi_1 {
            None => vec![("wi", &mut self.wi), ("wo", &mut self.wo)],
            Some(wi_1) => vec![("wi_0", &mut self.wi), ("wi_1", wi_1), ("wo", &mut self.wo)],
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

impl Block {
    fn ff_index(&self) -> usize {
        if self.cross.is_some() { 2 } else { 1 }
    }
}

/// An encoder or decoder stack.
#[derive(Clone, Debug)]
pub struct Stack {
    pub blocks: Vec<Block>,
    /// `[buckets, heads]`, stored in block 0 under HF's name and used by every block.
    pub relative_attention_bias: Tensor<2>,
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
        embedding(self.relative_attention_bias.clone(), idx).permute([2, 0, 1]).unsqueeze::<4>()
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

/// Reads T5's modules off a [`Loader`], in the config's shapes.
struct T5Loader<'c, 's, 'a> {
    l: Loader<'s, 'a>,
    config: &'c T5Config,
}

impl T5Loader<'_, '_, '_> {
    fn norm(&mut self, prefix: &str) -> Result<RmsNorm> {
        RmsNorm::load(&mut self.l, prefix, self.config.d_model, self.config.layer_norm_epsilon)
    }

    fn linear(&mut self, prefix: &str, d_out: usize, d_in: usize) -> Result<Linear> {
        self.l.linear(prefix, d_out, d_in, false)
    }

    fn attention(&mut self, prefix: &str) -> Result<Attention> {
        let (d, inner) = (self.config.d_model, self.config.inner_dim());
        let q = self.linear(&format!("{prefix}.q"), inner, d)?;
        let k = self.linear(&format!("{prefix}.k"), inner, d)?;
        let v = self.linear(&format!("{prefix}.v"), inner, d)?;
        let o = self.linear(&format!("{prefix}.o"), d, inner)?;
        Ok(Attention { q, k, v, o, n_heads: self.config.num_heads, d_kv: self.config.d_kv })
    }

    fn feed_forward(&mut self, prefix: &str) -> Result<FeedForward> {
        let (d, ff) = (self.config.d_model, self.config.d_ff);
        Ok(match self.config.feed_forward_proj {
            FeedForwardProj::Relu => FeedForward {
                wi: self.linear(&format!("{prefix}.wi"), ff, d)?,
                wi_1: None,
                wo: self.linear(&format!("{prefix}.wo"), d, ff)?,
            },
            FeedForwardProj::GatedGelu => FeedForward {
                wi: self.linear(&format!("{prefix}.wi_0"), ff, d)?,
                wi_1: Some(self.linear(&format!("{prefix}.wi_1"), ff, d)?),
                wo: self.linear(&format!("{prefix}.wo"), d, ff)?,
            },
        })
    }

    /// `n_blocks` (>= 1, as the config guarantees) blocks and the final norm, in HF order.
    fn stack(&mut self, name: &'static str, n_blocks: usize) -> Result<Stack> {
        let decoder = name == "decoder";
        // No capacity from the config's layer count: a corrupt count (2^63) would abort in the
        // allocation, while the first missing layer ends the load with an error.
        let mut blocks = Vec::new();
        let mut relative_attention_bias = None;
        for i in 0..n_blocks {
            let p = format!("{name}.block.{i}.layer");
            let self_attn = self.attention(&format!("{p}.0.SelfAttention"))?;
            if i == 0 {
                let shape = [self.config.relative_attention_num_buckets, self.config.num_heads];
                relative_attention_bias = Some(self.l.matrix(&format!("{p}.0.SelfAttention.relative_attention_bias.weight"), shape)?);
            }
            let self_attn_norm = self.norm(&format!("{p}.0.layer_norm"))?;
            let cross = if decoder {
                let attn = self.attention(&format!("{p}.1.EncDecAttention"))?;
                Some((self.norm(&format!("{p}.1.layer_norm"))?, attn))
            } else {
                None
            };
            let f = if decoder { 2 } else { 1 };
            let ff = self.feed_forward(&format!("{p}.{f}.DenseReluDense"))?;
            let ff_norm = self.norm(&format!("{p}.{f}.layer_norm"))?;
            blocks.push(Block { self_attn_norm, self_attn, cross, ff_norm, ff });
        }
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
    pub shared: Tensor<2>,
    pub encoder: Stack,
    pub decoder: Stack,
    /// `None` when tied to `shared`.
    pub lm_head: Option<Tensor<2>>,
}

impl T5 {
    /// Builds the model, asking `source` for every parameter in HF order. The head is
    /// `lm_head.weight` when the checkpoint has it; when it has not and `tie_word_embeddings` is set,
    /// the head is `shared` (transformers 5 ties only what the checkpoint lacks).
    pub fn load(config: T5Config, device: &Device, source: &mut TensorSource<'_>) -> Result<Self> {
        let mut l = T5Loader { l: Loader::new(source, device), config: &config };
        let (vocab, d) = (config.vocab_size, config.d_model);
        let shared = l.l.matrix("shared.weight", [vocab, d])?;
        let encoder = l.stack("encoder", config.num_layers)?;
        let decoder = l.stack("decoder", config.num_decoder_layers)?;
        let lm_head = match l.l.matrix("lm_head.weight", [vocab, d]) {
            Ok(w) => Some(w),
            Err(Error::MissingTensor { .. }) if config.tie_word_embeddings => None,
            Err(e) => return Err(e),
        };
        Ok(Self { config, shared, encoder, decoder, lm_head })
    }

    pub fn device(&self) -> Device {
        self.shared.device()
    }

    /// The encoder output `[B, S, d_model]` for token ids `[B, S]`; `padding` is `[B, S]` row-major,
    /// 1 = real token (`None`: no padding).
    pub fn encode(&self, ids: Tensor<2, Int>, padding: Option<&[u32]>) -> Tensor<3> {
        let [b, s] = ids.dims();
        let bias = self.encoder.position_bias(&self.config, 0, s, &ids.device());
        let mask = padding.map(|p| padding_mask(p, b, s));
        let mut x = embedding(self.shared.clone(), ids);
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
        self.lm_head.clone().unwrap_or_else(|| self.shared.clone())
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
        let mut x = embedding(self.shared.clone(), decoder_ids);
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

/// Linear layers with their names, borrowed for reading or for changing.
type Named<'a> = (String, &'a Linear);
type NamedMut<'a> = (String, &'a mut Linear);

impl Block {
    /// The linears with their names inside the block in execution order, and apart the
    /// cross-attention keys/values, which run before the decoder.
    fn linears(&self) -> (Vec<Named<'_>>, Vec<Named<'_>>) {
        let a = &self.self_attn;
        let mut out: Vec<Named<'_>> = [("q", &a.q), ("k", &a.k), ("v", &a.v), ("o", &a.o)]
            .into_iter()
            .map(|(n, l)| (format!("layer.0.SelfAttention.{n}"), l))
            .collect();
        let mut cross_kv = Vec::new();
        if let Some((_, c)) = &self.cross {
            out.push(("layer.1.EncDecAttention.q".into(), &c.q));
            out.push(("layer.1.EncDecAttention.o".into(), &c.o));
            cross_kv = vec![("layer.1.EncDecAttention.k".into(), &c.k), ("layer.1.EncDecAttention.v".into(), &c.v)];
        }
        let f = self.ff_index();
        out.extend(self.ff.linears().into_iter().map(|(n, l)| (format!("layer.{f}.DenseReluDense.{n}"), l)));
        (out, cross_kv)
    }

    fn linears_mut(&mut self) -> (Vec<NamedMut<'_>>, Vec<NamedMut<'_>>) {
        let f = self.ff_index();
        let a = &mut self.self_attn;
        let mut out: Vec<NamedMut<'_>> = [("q", &mut a.q), ("k", &mut a.k), ("v", &mut a.v), ("o", &mut a.o)]
            .into_iter()
            .map(|(n, l)| (format!("layer.0.SelfAttention.{n}"), l))
            .collect();
        let mut cross_kv = Vec::new();
        if let Some((_, c)) = &mut self.cross {
            out.push(("layer.1.EncDecAttention.q".into(), &mut c.q));
            out.push(("layer.1.EncDecAttention.o".into(), &mut c.o));
            cross_kv = vec![("layer.1.EncDecAttention.k".into(), &mut c.k), ("layer.1.EncDecAttention.v".into(), &mut c.v)];
        }
        out.extend(self.ff.linears_mut().into_iter().map(|(n, l)| (format!("layer.{f}.DenseReluDense.{n}"), l)));
        (out, cross_kv)
    }
}

/// Prefixes block-relative names with the block's path.
fn under<L>(prefix: &str, named: Vec<(String, L)>) -> Vec<(String, L)> {
    named.into_iter().map(|(n, l)| (format!("{prefix}.{n}"), l)).collect()
}

impl Linears for T5 {
    /// Encoder blocks, the cross-attention keys/values of every decoder layer, decoder blocks.
    fn linears(&self) -> Vec<(String, &Linear)> {
        let mut out = Vec::new();
        for (i, b) in self.encoder.blocks.iter().enumerate() {
            out.extend(under(&format!("encoder.block.{i}"), b.linears().0));
        }
        let (mut cross_kv, mut rest) = (Vec::new(), Vec::new());
        for (i, b) in self.decoder.blocks.iter().enumerate() {
            let (linears, kv) = b.linears();
            let prefix = format!("decoder.block.{i}");
            cross_kv.extend(under(&prefix, kv));
            rest.extend(under(&prefix, linears));
        }
        out.extend(cross_kv);
        out.extend(rest);
        out
    }

    fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let mut out = Vec::new();
        for (i, b) in self.encoder.blocks.iter_mut().enumerate() {
            out.extend(under(&format!("encoder.block.{i}"), b.linears_mut().0));
        }
        let (mut cross_kv, mut rest) = (Vec::new(), Vec::new());
        for (i, b) in self.decoder.blocks.iter_mut().enumerate() {
            let (linears, kv) = b.linears_mut();
            let prefix = format!("decoder.block.{i}");
            cross_kv.extend(under(&prefix, kv));
            rest.extend(under(&prefix, linears));
        }
        out.extend(cross_kv);
        out.extend(rest);
        out
    }
}

impl Parameters for T5 {
    /// transformers' `named_parameters` order.
    fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_>)) {
        f("shared.weight", ParamRef::Matrix(&self.shared));
        for stack in [&self.encoder, &self.decoder] {
            for (i, b) in stack.blocks.iter().enumerate() {
                let p = format!("{}.block.{i}.layer", stack.name);
                let a = &b.self_attn;
                for (n, l) in [("q", &a.q), ("k", &a.k), ("v", &a.v), ("o", &a.o)] {
                    l.visit(f, &format!("{p}.0.SelfAttention.{n}"));
                }
                if i == 0 {
                    f(&format!("{p}.0.SelfAttention.relative_attention_bias.weight"), ParamRef::Matrix(&stack.relative_attention_bias));
                }
                b.self_attn_norm.visit(f, &format!("{p}.0.layer_norm"));
                if let Some((norm, c)) = &b.cross {
                    for (n, l) in [("q", &c.q), ("k", &c.k), ("v", &c.v), ("o", &c.o)] {
                        l.visit(f, &format!("{p}.1.EncDecAttention.{n}"));
                    }
                    norm.visit(f, &format!("{p}.1.layer_norm"));
                }
                let ff = b.ff_index();
                for (n, l) in b.ff.linears() {
                    l.visit(f, &format!("{p}.{ff}.DenseReluDense.{n}"));
                }
                b.ff_norm.visit(f, &format!("{p}.{ff}.layer_norm"));
            }
            stack.final_layer_norm.visit(f, &format!("{}.final_layer_norm", stack.name));
        }
        if let Some(head) = &self.lm_head {
            f("lm_head.weight", ParamRef::Matrix(head));
        }
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        f("shared.weight", ParamMut::Matrix(&mut self.shared));
        for stack in [&mut self.encoder, &mut self.decoder] {
            for (i, b) in stack.blocks.iter_mut().enumerate() {
                let p = format!("{}.block.{i}.layer", stack.name);
                let ff = b.ff_index();
                let a = &mut b.self_attn;
                for (n, l) in [("q", &mut a.q), ("k", &mut a.k), ("v", &mut a.v), ("o", &mut a.o)] {
                    l.visit_mut(f, &format!("{p}.0.SelfAttention.{n}"));
                }
                if i == 0 {
                    f(&format!("{p}.0.SelfAttention.relative_attention_bias.weight"), ParamMut::Matrix(&mut stack.relative_attention_bias));
                }
                b.self_attn_norm.visit_mut(f, &format!("{p}.0.layer_norm"));
                if let Some((norm, c)) = &mut b.cross {
                    for (n, l) in [("q", &mut c.q), ("k", &mut c.k), ("v", &mut c.v), ("o", &mut c.o)] {
                        l.visit_mut(f, &format!("{p}.1.EncDecAttention.{n}"));
                    }
                    norm.visit_mut(f, &format!("{p}.1.layer_norm"));
                }
                for (n, l) in b.ff.linears_mut() {
                    l.visit_mut(f, &format!("{p}.{ff}.DenseReluDense.{n}"));
                }
                b.ff_norm.visit_mut(f, &format!("{p}.{ff}.layer_norm"));
            }
            stack.final_layer_norm.visit_mut(f, &format!("{}.final_layer_norm", stack.name));
        }
        if let Some(head) = &mut self.lm_head {
            f("lm_head.weight", ParamMut::Matrix(head));
        }
    }
}

impl T5 {
    /// The execution-ordered op graph the FLOPs profiler works on: `graph::t5::ops` of the config, which
    /// fixes every shape `load` reads, with the head tied as loaded. Block `layer`s count through both
    /// stacks: encoder blocks `0..num_layers`, decoder blocks after them. Ops of the decoder stack run
    /// on [`Stream::Decoder`]; the cross-attention keys/values read the encoder output, so they run on
    /// [`Stream::Input`].
    ///
    /// [`Stream::Decoder`]: super::graph::Stream::Decoder
    /// [`Stream::Input`]: super::graph::Stream::Input
    pub fn op_graph(&self) -> Vec<OpSpec> {
        t5::ops(&self.config, self.lm_head.is_none())
    }
}
