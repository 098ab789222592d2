//! The op graph of each architecture: its tensors and weightless ops in execution order, with the
//! shapes that fix their costs. Each architecture's `load` records it as it declares its
//! parameters (`model::loader`), from a config alone when planning a run without weights
//! (`llama_ops` and its siblings) or while reading a checkpoint (`Model::op_graph`); the FLOPs
//! profiler (`crate::profile`) turns it into costs.

pub(crate) mod ops;

use serde::{Deserialize, Serialize};

/// What a tensor is, for the app's tensor map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TensorRole {
    Embedding,
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
    Norm,
    LmHead,
    Fc1,
    Fc2,
    Qkv,
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OpKind {
    /// Token (or learned position) embedding lookup; a parameter.
    Embedding { vocab: usize, dim: usize },
    /// A linear layer's weight; a parameter.
    Linear { d_in: usize, d_out: usize },
    /// The bias of the preceding linear; a parameter.
    Bias { dim: usize },
    /// RMSNorm/LayerNorm weight; a parameter.
    Norm { dim: usize },
    /// LayerNorm bias; a parameter.
    NormBias { dim: usize },
    /// Weightless `softmax(QK^T)V` over the op's own stream; a chain node.
    AttentionCore { n_heads: usize, head_dim: usize, causal: bool },
    /// Weightless cross-attention: queries from the op's stream, keys and values over the input
    /// stream (an encoder-decoder's source); a chain node.
    CrossAttentionCore { n_heads: usize, head_dim: usize },
    /// T5's relative position bias: a `[buckets, n_heads]` table whose values are added to the
    /// attention scores of all `layers` of a stack; a parameter.
    RelativeBias { buckets: usize, n_heads: usize, layers: usize, causal: bool },
    /// Untied: a parameter. Tied: a chain node whose weight gradient is charged to the embedding
    /// with the same `vocab` and `dim`.
    LmHead { vocab: usize, dim: usize, tied: bool },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpSpec {
    /// The HF parameter name, or a label for chain nodes.
    pub name: String,
    pub kind: OpKind,
    pub layer: Option<usize>,
    pub role: TensorRole,
    #[serde(default)]
    pub stream: Stream,
}

/// The token stream an op runs on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// The input tokens: a decoder-only model's sequence, an encoder-decoder's source.
    #[default]
    Input,
    /// An encoder-decoder's target tokens (the profile's `BatchShape::decoder_seq`).
    Decoder,
}

/// FT-top-k's rule over the block number of each op in execution order: true for the ops of the
/// last `k` blocks and for every op after the last block (the final norm, an untied head). For an
/// encoder-decoder model, whose decoder blocks are numbered after the encoder's, these are the
/// decoder's last blocks.
pub fn top_k_blocks(layers: &[Option<usize>], k: usize) -> Vec<bool> {
    let blocks = layers.iter().flatten().max().map_or(0, |l| l + 1);
    let first = blocks.saturating_sub(k);
    let last_block = layers.iter().rposition(Option::is_some).unwrap_or(0);
    layers.iter().enumerate().map(|(i, layer)| layer.map_or(i > last_block, |l| l >= first)).collect()
}
