//! The FLOPs model (spec sections 2-4): an architecture lists its ops in execution order
//! (input -> output) and [`profile`] turns them into nodes with `t_fp`, `t_dy`, `t_dw` in
//! multiply-accumulates for one batch.
//!
//! The backward pass is modelled as one chain in execution order: training a tensor means
//! propagating activation gradients through every node between it and the loss. Parallel branches
//! (q/k/v, gate/up) are charged as if chained, which can only over-estimate a selection's cost.
//!
//! Encoder-decoder models run two token streams ([`Stream`]): each op says which one it runs on, and
//! [`BatchShape::decoder_seq`] gives the decoder's length. The loss sits at the decoder output and
//! reaches the encoder only through the cross-attention keys/values, which every decoder layer
//! computes from the encoder output. Their chain is therefore: the encoder, the cross-attention
//! keys/values of all decoder layers (computed before the decoder runs, as incremental decoding
//! does), the decoder. Training decoder tensors is then charged the decoder's backward down to the
//! deepest of them, and training an encoder tensor the whole decoder, every cross key/value input
//! gradient and the encoder above it, as the chain rule needs (up to the branch over-estimates above;
//! a cross-attention core is also charged its key/value gradients, which a frozen encoder does not
//! need). The approximation falls on the cross keys/values: training layer l's is charged the
//! decoder's backward down to its first layer, and the input gradients of the layers above l, where
//! it needs the backward down to layer l only. An over-estimate again. The decoder's lookup into a
//! shared embedding table (batch x decoder_seq x dim) is not charged.

pub mod blocks;
mod cost;
mod flops;
pub mod reach;
pub mod t5;

pub use cost::UPDATE_MACS_PER_PARAM;
// The op graph an architecture describes itself by is the profile's input and sits in its nodes.
pub use crate::model::graph::{OpKind, OpSpec, Stream, TensorRole};
pub use flops::{FLOPS_PER_MAC, FlopsConvention};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::select::{self, Candidate, CostRule, SelectError, Selection};

/// The batch the costs are computed for.
///
/// Every per-token term uses `batch * seq` (`batch * decoder_seq` on the decoder stream). Callers that
/// know the real (unpadded) token count may pass `seq` = mean real length per sequence: the linear terms
/// are then exact, and the attention term (`S^2` per sequence) slightly under-estimates a batch of
/// unequal lengths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BatchShape {
    pub batch: usize,
    pub seq: usize,
    /// The target length of an encoder-decoder model; `None` for decoder-only models.
    #[serde(default)]
    pub decoder_seq: Option<usize>,
    /// Tokens the LM head runs on: in training only those with a target (the loss skips prompt
    /// and padding positions, which have none). `None`: every token of the head's stream, as
    /// planning without the data and the paper's FLOPs count.
    #[serde(default)]
    pub head_tokens: Option<usize>,
    /// Tokens of the input stream the backward pass runs over when the batch's shared prompt
    /// prefix is frozen (`train::config::TrainConfig::frozen_prompt`); `None`: every token, as full
    /// fine-tuning, which the profile's `t_full` always counts.
    #[serde(default)]
    pub grad_tokens: Option<usize>,
}

impl BatchShape {
    /// The padded shape a run with `max_len` is planned at: `batch` rows of `max_len` on every stream
    /// `ops` run on (for an encoder-decoder model `max_len` caps source and target each).
    pub fn padded(ops: &[OpSpec], batch: usize, max_len: usize) -> Self {
        let decoder = ops.iter().any(|op| op.stream == Stream::Decoder);
        Self { batch, seq: max_len, decoder_seq: decoder.then_some(max_len), head_tokens: None, grad_tokens: None }
    }

    /// The shape with the head charged for `per_row` target tokens per sequence on average (what
    /// the trainer will count per batch), capped at the head stream's tokens.
    pub fn with_mean_targets(self, per_row: f64) -> Self {
        let stream = if self.decoder_seq.is_some() { Stream::Decoder } else { Stream::Input };
        let cap = self.tokens_of(stream).unwrap_or(0);
        Self { head_tokens: Some(((per_row * self.batch as f64).round() as usize).min(cap)), ..self }
    }

    /// The shape with the backward pass over `share` of the input stream's tokens (a frozen prompt
    /// prefix, [`BatchShape::grad_tokens`]).
    pub fn with_grad_share(self, share: f64) -> Self {
        Self { grad_tokens: Some((share.clamp(0.0, 1.0) * self.tokens() as f64).round() as usize), ..self }
    }

    /// Tokens of the input stream.
    pub fn tokens(self) -> usize {
        self.batch * self.seq
    }

    /// Sequence length of a stream; `None` for the decoder stream of a shape without one.
    pub fn len_of(self, stream: Stream) -> Option<usize> {
        match stream {
            Stream::Input => Some(self.seq),
            Stream::Decoder => self.decoder_seq,
        }
    }

    /// Tokens of a stream; `None` for the decoder stream of a shape without one.
    pub fn tokens_of(self, stream: Stream) -> Option<usize> {
        self.len_of(stream).map(|s| self.batch * s)
    }
}

/// One node of the execution-ordered graph, costs in MACs for one batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub layer: Option<usize>,
    pub role: TensorRole,
    #[serde(default)]
    pub stream: Stream,
    pub t_fp: f64,
    pub t_dy: f64,
    pub t_dw: f64,
    /// False for chain nodes (attention core, tied head).
    pub selectable: bool,
    /// Elements of the parameter (0 for chain nodes; a tied weight counts at the embedding).
    pub param_numel: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub shape: BatchShape,
    /// Whether causal attention was charged half its `S^2` terms.
    pub causal_half: bool,
    /// In execution order, input -> output.
    pub nodes: Vec<Node>,
    /// Full fine-tuning's backward MACs when the nodes' are those of a frozen prompt prefix
    /// ([`BatchShape::grad_tokens`]); `None`: the nodes' own sum.
    #[serde(default)]
    pub full_backward: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Error)]
pub enum ProfileError {
    #[error("tied head `{head}` has no earlier embedding with vocab {vocab} and dim {dim}")]
    TiedHeadWithoutEmbedding { head: String, vocab: usize, dim: usize },
    #[error("`{op}` runs on the decoder stream, but the batch shape has no decoder length")]
    NoDecoderLength { op: String },
    #[error("{got} importances given for {expected} nodes")]
    ImportanceLength { expected: usize, got: usize },
    #[error("node index {index} is out of range for {len} nodes")]
    NodeOutOfRange { index: usize, len: usize },
    #[error("node {index} (`{name}`) is a chain node and cannot be selected")]
    NotSelectable { index: usize, name: String },
    #[error("the selection does not belong to this profile: {0}")]
    ForeignSelection(String),
    #[error(transparent)]
    Select(#[from] SelectError),
}

/// Costs `ops` (execution order) for one batch of `shape`. With `causal_half`, causal attention cores
/// are charged half their `S^2` terms; use the same setting for full and selective runs.
pub fn profile(ops: &[OpSpec], shape: BatchShape, causal_half: bool) -> Result<Profile, ProfileError> {
    let mut nodes: Vec<Node> = Vec::with_capacity(ops.len());
    for op in ops {
        let cost =
            cost::op_cost(&op.kind, shape, op.stream, causal_half).ok_or_else(|| ProfileError::NoDecoderLength { op: op.name.clone() })?;
        let (selectable, param_numel, t_dw) = match op.kind {
            OpKind::Embedding { vocab, dim } => (true, vocab * dim, cost.t_dw),
            OpKind::Linear { d_in, d_out } => (true, d_in * d_out, cost.t_dw),
            OpKind::Bias { dim } | OpKind::Norm { dim } | OpKind::NormBias { dim } => (true, dim, cost.t_dw),
            OpKind::RelativeBias { buckets, n_heads, .. } => (true, buckets * n_heads, cost.t_dw),
            OpKind::AttentionCore { .. } | OpKind::CrossAttentionCore { .. } => (false, 0, 0.0),
            OpKind::LmHead { vocab, dim, tied: false } => (true, vocab * dim, cost.t_dw),
            OpKind::LmHead { vocab, dim, tied: true } => {
                // The shared weight sits at the input, so training it needs the full backward pass.
                let embedding = nodes
                    .iter_mut()
                    .zip(ops)
                    .find(|(_, spec)| spec.kind == (OpKind::Embedding { vocab, dim }))
                    .map(|(node, _)| node)
                    .ok_or_else(|| ProfileError::TiedHeadWithoutEmbedding { head: op.name.clone(), vocab, dim })?;
                embedding.t_dw += cost.t_dw;
                (false, 0, 0.0)
            }
        };
        nodes.push(Node {
            name: op.name.clone(),
            layer: op.layer,
            role: op.role,
            stream: op.stream,
            t_fp: cost.t_fp,
            t_dy: cost.t_dy,
            t_dw,
            selectable,
            param_numel,
        });
    }
    let full_backward = match shape.grad_tokens {
        Some(_) => Some(profile(ops, BatchShape { grad_tokens: None, ..shape }, causal_half)?.t_bp_full()),
        None => None,
    };
    Ok(Profile { shape, causal_half, nodes, full_backward })
}

impl Profile {
    /// Forward MACs of one step.
    pub fn t_fp(&self) -> f64 {
        self.nodes.iter().map(|n| n.t_fp).sum()
    }

    /// Backward MACs of full fine-tuning: every `t_dy` and every `t_dw` over every token (also
    /// when the nodes are costed for a frozen prompt prefix, [`BatchShape::grad_tokens`]).
    pub fn t_bp_full(&self) -> f64 {
        self.full_backward.unwrap_or_else(|| self.nodes.iter().map(|n| n.t_dy + n.t_dw).sum())
    }

    /// Per-step MACs of full fine-tuning, forward included.
    pub fn t_full(&self) -> f64 {
        self.t_fp() + self.t_bp_full()
    }

    /// Full fine-tuning's update work ([`UPDATE_MACS_PER_PARAM`] for every parameter): with
    /// [`Profile::t_full`], its modelled step time.
    pub fn full_update(&self) -> f64 {
        UPDATE_MACS_PER_PARAM * self.nodes.iter().map(|n| n.param_numel as f64).sum::<f64>()
    }

    /// The smallest feasible rho: the forward pass alone.
    pub fn min_rho(&self) -> f64 {
        self.t_fp() / self.t_full()
    }

    /// Execution index of the node at position `from_output` in output order (0 = nearest the loss).
    pub fn execution_index(&self, from_output: usize) -> Option<usize> {
        (from_output < self.nodes.len()).then(|| self.nodes.len() - 1 - from_output)
    }

    /// Candidates for [`select::select`], ordered from the output. `importance` is per node in
    /// execution order (values of chain nodes are ignored).
    pub fn candidates(&self, importance: &[f64]) -> Result<Vec<Candidate>, ProfileError> {
        if importance.len() != self.nodes.len() {
            return Err(ProfileError::ImportanceLength { expected: self.nodes.len(), got: importance.len() });
        }
        Ok(self
            .nodes
            .iter()
            .zip(importance)
            .rev()
            .map(|(node, &importance)| Candidate {
                t_dy: node.t_dy,
                t_dw: node.t_dw,
                importance: if node.selectable { importance } else { 0.0 },
                selectable: node.selectable,
                t_update: if node.selectable { UPDATE_MACS_PER_PARAM * node.param_numel as f64 } else { 0.0 },
            })
            .collect())
    }

    /// GreenTrainer's choice: the nodes (execution indices, ascending) whose summed `importance`
    /// (per node in execution order) is largest within `config.rho` of full fine-tuning.
    pub fn select(&self, importance: &[f64], config: &select::SelectConfig) -> Result<Vec<usize>, ProfileError> {
        let chosen = select::select_within(&self.candidates(importance)?, self.t_fp(), self.t_full(), config)?;
        self.selected_nodes(&chosen)
    }

    /// Execution indices (ascending) of the nodes a selection over [`Profile::candidates`] chose.
    pub fn selected_nodes(&self, selection: &Selection) -> Result<Vec<usize>, ProfileError> {
        let mut nodes = selection
            .selected
            .iter()
            .map(|&j| {
                self.execution_index(j)
                    .filter(|&i| self.nodes[i].selectable)
                    .ok_or_else(|| ProfileError::ForeignSelection(format!("candidate {j} is not selectable here")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        nodes.sort_unstable();
        Ok(nodes)
    }

    /// Per-step MACs `t_fp + bp(m)` of training the nodes `selected` (execution indices, a set).
    pub fn selection_cost(&self, selected: &[usize], rule: CostRule) -> Result<f64, ProfileError> {
        let len = self.nodes.len();
        let from_output = selected
            .iter()
            .map(|&index| match self.nodes.get(index) {
                None => Err(ProfileError::NodeOutOfRange { index, len }),
                Some(node) if !node.selectable => Err(ProfileError::NotSelectable { index, name: node.name.clone() }),
                Some(_) => Ok(len - 1 - index),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let candidates = self.candidates(&vec![0.0; len])?;
        Ok(select::selection_cost(&candidates, self.t_fp(), &from_output, rule)?)
    }
}
