//! Per-op costs in multiply-accumulates (the table of spec section 2).

use super::{BatchShape, OpKind, Stream};

/// The memory-bound work of updating one trained parameter each step, in MAC-equivalents: its
/// weight gradient written onto fresh pages and transposed into place, read back for clipping,
/// and the optimizer's pass over weight, gradient and moments, some 50 bytes a parameter that the
/// MAC count leaves out. It matters where a step differentiates few tokens yet trains many
/// tensors (a frozen prompt prefix): there it rivals the gradients' MACs. Calibrated on the 2-core
/// CI CPU with `bench train --frozen-prompt 0.8` (SmolLM2-135M, 4 x 256): with every tensor
/// trained over the last fifth of the tokens, a step took 0.595-0.611 of full fine-tuning's time
/// at 0.497 of its MACs, which this value predicts (0.633) from above; 256 predicted 0.539.
pub const UPDATE_MACS_PER_PARAM: f64 = 1024.0;

/// MACs of one op for one batch.
pub(super) struct OpCost {
    pub t_fp: f64,
    pub t_dy: f64,
    /// Weight-gradient MACs of the op's parameter. For a tied head this is the head's share of the
    /// shared weight's gradient; the profile charges it to the embedding.
    pub t_dw: f64,
}

/// The cost of `kind` running on `stream`; `None` when the shape has no length for that stream.
/// With [`BatchShape::grad_tokens`] the backward terms of the input stream's ops (not the head's,
/// which [`BatchShape::head_tokens`] counts) run over those tokens only.
pub(super) fn op_cost(kind: &OpKind, shape: BatchShape, stream: Stream, causal_half: bool) -> Option<OpCost> {
    let mut cost = all_tokens(kind, shape, stream, causal_half)?;
    if let (Some(grad), Stream::Input, false) = (shape.grad_tokens, stream, matches!(kind, OpKind::LmHead { .. })) {
        let tokens = shape.tokens_of(stream)? as f64;
        let share = if tokens > 0.0 { (grad as f64 / tokens).min(1.0) } else { 1.0 };
        // The last queries see the most keys: their attention backward is charged as if each saw
        // every key, never less than it costs.
        let share = match kind {
            OpKind::AttentionCore { causal: true, .. } if causal_half => (2.0 * share).min(1.0),
            _ => share,
        };
        cost.t_dy *= share;
        cost.t_dw *= share;
    }
    Some(cost)
}

/// [`op_cost`] with every token differentiated.
fn all_tokens(kind: &OpKind, shape: BatchShape, stream: Stream, causal_half: bool) -> Option<OpCost> {
    let tokens = shape.tokens_of(stream)? as f64;
    let keys = shape.len_of(stream)? as f64;
    let per_token = |macs: usize| tokens * macs as f64;
    let half = |causal: bool| if causal && causal_half { 0.5 } else { 1.0 };
    Some(match *kind {
        // A lookup: one copy per token forward, a scatter-add backward; the first op needs no dx.
        OpKind::Embedding { dim, .. } => OpCost { t_fp: per_token(dim), t_dy: 0.0, t_dw: per_token(dim) },
        OpKind::Linear { d_in, d_out } => {
            let macs = per_token(d_in * d_out);
            OpCost { t_fp: macs, t_dy: macs, t_dw: macs }
        }
        // Additive parameters pass the gradient through unchanged: no dx work.
        OpKind::Bias { dim } | OpKind::NormBias { dim } => OpCost { t_fp: per_token(dim), t_dy: 0.0, t_dw: per_token(dim) },
        OpKind::Norm { dim } => {
            let macs = per_token(dim);
            OpCost { t_fp: macs, t_dy: macs, t_dw: macs }
        }
        // Added to every layer's scores, its gradient summed over them; positions need no dx.
        OpKind::RelativeBias { n_heads, layers, causal, .. } => {
            let macs = half(causal) * tokens * keys * (n_heads * layers) as f64;
            OpCost { t_fp: macs, t_dy: 0.0, t_dw: macs }
        }
        OpKind::AttentionCore { n_heads, head_dim, causal } => {
            // QK^T and PV each cost S * d_attn per token; backward needs twice that.
            let macs = half(causal) * tokens * keys * (n_heads * head_dim) as f64;
            OpCost { t_fp: 2.0 * macs, t_dy: 4.0 * macs, t_dw: 0.0 }
        }
        OpKind::CrossAttentionCore { n_heads, head_dim } => {
            // As self-attention, over the input stream's keys.
            let macs = tokens * shape.seq as f64 * (n_heads * head_dim) as f64;
            OpCost { t_fp: 2.0 * macs, t_dy: 4.0 * macs, t_dw: 0.0 }
        }
        OpKind::LmHead { vocab, dim, .. } => {
            let macs = shape.head_tokens.map_or(tokens, |t| t as f64) * (vocab * dim) as f64;
            OpCost { t_fp: macs, t_dy: macs, t_dw: macs }
        }
    })
}
