//! The op graph of an OPT model. [`opt_ops`] derives it from the config alone, for planning a run
//! without weights; `Opt::op_graph` reads the same [`OptShape`] off the loaded tensors.

use super::{OpKind, OpSpec, TensorRole};
use crate::model::opt::{OptConfig, POSITION_OFFSET};

pub fn opt_ops(c: &OptConfig) -> Vec<OpSpec> {
    OptShape {
        vocab: c.vocab_size,
        embed_dim: c.word_embed_proj_dim,
        hidden: c.hidden_size,
        positions: c.max_position_embeddings + POSITION_OFFSET,
        ffn: c.ffn_dim,
        n_heads: c.num_attention_heads,
        head_dim: c.head_dim(),
        layers: c.num_hidden_layers,
        norm_before: c.do_layer_norm_before,
        bias: c.enable_bias,
        affine: c.layer_norm_elementwise_affine,
        projected: c.has_projections(),
        final_norm: c.has_final_layer_norm(),
        tied: c.tie_word_embeddings,
    }
    .ops()
}

/// What determines an OPT op graph; every layer has the same shape.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct OptShape {
    pub vocab: usize,
    /// `word_embed_proj_dim`: the width of the token embedding and the head.
    pub embed_dim: usize,
    pub hidden: usize,
    /// Rows of the position table (`max_position_embeddings + 2`).
    pub positions: usize,
    pub ffn: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub layers: usize,
    pub norm_before: bool,
    pub bias: bool,
    pub affine: bool,
    pub projected: bool,
    pub final_norm: bool,
    pub tied: bool,
}

impl OptShape {
    /// The ops in execution order with HF parameter names.
    pub fn ops(&self) -> Vec<OpSpec> {
        let mut ops = Vec::new();
        let (d, bias) = (self.hidden, self.bias);
        // A LayerNorm without elementwise affine has no parameter, hence no op.
        let norm = |ops: &mut Vec<OpSpec>, prefix: &str, layer| {
            if self.affine {
                layer_norm(ops, prefix, d, layer);
            }
        };
        let embedding = |vocab, dim| OpKind::Embedding { vocab, dim };
        op(&mut ops, "model.decoder.embed_tokens.weight", embedding(self.vocab, self.embed_dim), None, TensorRole::Embedding);
        if self.projected {
            linear(&mut ops, "model.decoder.project_in", self.embed_dim, d, false, None, TensorRole::Other);
        }
        // Positions are added after project_in: training them needs no gradient through it.
        op(&mut ops, "model.decoder.embed_positions.weight", embedding(self.positions, d), None, TensorRole::Embedding);
        for i in 0..self.layers {
            let (p, at) = (format!("model.decoder.layers.{i}"), Some(i));
            let (attn_norm, mlp_norm) = (format!("{p}.self_attn_layer_norm"), format!("{p}.final_layer_norm"));
            if self.norm_before {
                norm(&mut ops, &attn_norm, at);
            }
            linear(&mut ops, &format!("{p}.self_attn.q_proj"), d, d, bias, at, TensorRole::Q);
            linear(&mut ops, &format!("{p}.self_attn.k_proj"), d, d, bias, at, TensorRole::K);
            linear(&mut ops, &format!("{p}.self_attn.v_proj"), d, d, bias, at, TensorRole::V);
            let core = OpKind::AttentionCore { n_heads: self.n_heads, head_dim: self.head_dim, causal: true };
            op(&mut ops, &format!("{p}.self_attn.core"), core, at, TensorRole::Other);
            linear(&mut ops, &format!("{p}.self_attn.out_proj"), d, d, bias, at, TensorRole::O);
            norm(&mut ops, if self.norm_before { &mlp_norm } else { &attn_norm }, at);
            linear(&mut ops, &format!("{p}.fc1"), d, self.ffn, bias, at, TensorRole::Fc1);
            linear(&mut ops, &format!("{p}.fc2"), self.ffn, d, bias, at, TensorRole::Fc2);
            if !self.norm_before {
                norm(&mut ops, &mlp_norm, at);
            }
        }
        if self.final_norm {
            norm(&mut ops, "model.decoder.final_layer_norm", None);
        }
        if self.projected {
            linear(&mut ops, "model.decoder.project_out", d, self.embed_dim, false, None, TensorRole::Other);
        }
        let name = if self.tied { "lm_head (tied to model.decoder.embed_tokens.weight)" } else { "lm_head.weight" };
        op(&mut ops, name, OpKind::LmHead { vocab: self.vocab, dim: self.embed_dim, tied: self.tied }, None, TensorRole::LmHead);
        ops
    }
}

fn op(ops: &mut Vec<OpSpec>, name: &str, kind: OpKind, layer: Option<usize>, role: TensorRole) {
    ops.push(OpSpec { name: name.into(), kind, layer, role });
}

/// A linear weight and, when present, its bias (same role).
fn linear(ops: &mut Vec<OpSpec>, prefix: &str, d_in: usize, d_out: usize, bias: bool, layer: Option<usize>, role: TensorRole) {
    op(ops, &format!("{prefix}.weight"), OpKind::Linear { d_in, d_out }, layer, role);
    if bias {
        op(ops, &format!("{prefix}.bias"), OpKind::Bias { dim: d_out }, layer, role);
    }
}

fn layer_norm(ops: &mut Vec<OpSpec>, prefix: &str, dim: usize, layer: Option<usize>) {
    op(ops, &format!("{prefix}.weight"), OpKind::Norm { dim }, layer, TensorRole::Norm);
    op(ops, &format!("{prefix}.bias"), OpKind::NormBias { dim }, layer, TensorRole::Norm);
}
