//! The op graph of a BLOOM model from its config, which fixes every shape `Bloom::load` reads:
//! for planning a run without weights, and `Bloom::op_graph`. For head-sized row blocks,
//! `query_key_value` needs `3 * head_dim` rows per head (see `model::bloom`).

use super::ops::OpList;
use super::{OpSpec, TensorRole};
use crate::model::bloom::BloomConfig;

pub fn bloom_ops(c: &BloomConfig) -> Vec<OpSpec> {
    let (vocab, d) = (c.vocab_size, c.hidden_size);
    let mut ops = OpList::default();
    ops.embedding("transformer.word_embeddings.weight", vocab, d);
    ops.norm("transformer.word_embeddings_layernorm", d, true, None);
    for i in 0..c.n_layer {
        let (p, at) = (format!("transformer.h.{i}"), Some(i));
        ops.norm(&format!("{p}.input_layernorm"), d, true, at);
        ops.linear(&format!("{p}.self_attention.query_key_value"), d, 3 * d, true, at, TensorRole::Qkv);
        ops.attention_core(&format!("{p}.self_attention"), c.n_head, c.head_dim(), i);
        ops.linear(&format!("{p}.self_attention.dense"), d, d, true, at, TensorRole::O);
        ops.norm(&format!("{p}.post_attention_layernorm"), d, true, at);
        ops.linear(&format!("{p}.mlp.dense_h_to_4h"), d, 4 * d, true, at, TensorRole::Fc1);
        ops.linear(&format!("{p}.mlp.dense_4h_to_h"), 4 * d, d, true, at, TensorRole::Fc2);
    }
    ops.norm("transformer.ln_f", d, true, None);
    ops.lm_head("transformer.word_embeddings.weight", vocab, d, c.tie_word_embeddings);
    ops.finish()
}
