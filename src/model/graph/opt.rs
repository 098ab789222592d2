//! The op graph of an OPT model from its config, which fixes every shape `Opt::load` reads: for
//! planning a run without weights, and `Opt::op_graph`.

use super::ops::OpList;
use super::{OpSpec, TensorRole};
use crate::model::opt::{OptConfig, POSITION_OFFSET};

/// The ops in execution order with HF parameter names.
pub fn opt_ops(c: &OptConfig) -> Vec<OpSpec> {
    let (d, e, ffn, bias) = (c.hidden_size, c.word_embed_proj_dim, c.ffn_dim, c.enable_bias);
    let mut ops = OpList::default();
    // A LayerNorm without elementwise affine has no parameter, hence no op.
    let norm = |ops: &mut OpList, prefix: &str, layer| {
        if c.layer_norm_elementwise_affine {
            ops.norm(prefix, d, true, layer);
        }
    };
    ops.embedding("model.decoder.embed_tokens.weight", c.vocab_size, e);
    if c.has_projections() {
        ops.linear("model.decoder.project_in", e, d, false, None, TensorRole::Other);
    }
    // Positions are added after project_in: training them needs no gradient through it.
    ops.embedding("model.decoder.embed_positions.weight", c.max_position_embeddings + POSITION_OFFSET, d);
    for i in 0..c.num_hidden_layers {
        let (p, at) = (format!("model.decoder.layers.{i}"), Some(i));
        let (attn_norm, mlp_norm) = (format!("{p}.self_attn_layer_norm"), format!("{p}.final_layer_norm"));
        if c.do_layer_norm_before {
            norm(&mut ops, &attn_norm, at);
        }
        ops.linear(&format!("{p}.self_attn.q_proj"), d, d, bias, at, TensorRole::Q);
        ops.linear(&format!("{p}.self_attn.k_proj"), d, d, bias, at, TensorRole::K);
        ops.linear(&format!("{p}.self_attn.v_proj"), d, d, bias, at, TensorRole::V);
        ops.attention_core(&format!("{p}.self_attn"), c.num_attention_heads, c.head_dim(), i);
        ops.linear(&format!("{p}.self_attn.out_proj"), d, d, bias, at, TensorRole::O);
        norm(&mut ops, if c.do_layer_norm_before { &mlp_norm } else { &attn_norm }, at);
        ops.linear(&format!("{p}.fc1"), d, ffn, bias, at, TensorRole::Fc1);
        ops.linear(&format!("{p}.fc2"), ffn, d, bias, at, TensorRole::Fc2);
        if !c.do_layer_norm_before {
            norm(&mut ops, &mlp_norm, at);
        }
    }
    if c.has_final_layer_norm() {
        norm(&mut ops, "model.decoder.final_layer_norm", None);
    }
    if c.has_projections() {
        ops.linear("model.decoder.project_out", d, e, false, None, TensorRole::Other);
    }
    ops.lm_head("model.decoder.embed_tokens.weight", c.vocab_size, e, c.tie_word_embeddings);
    ops.finish()
}
