//! The op graph of a BLOOM model from its config alone, for planning a run without loading
//! weights. Equal to `Bloom::op_graph` of the loaded model; both use the same op builders.

use super::{OpSpec, TensorRole};
use crate::model::bloom::{BloomConfig, attention_core_op, embedding_op, layer_norm_ops, linear_ops, lm_head_op};

pub fn bloom_ops(c: &BloomConfig) -> Vec<OpSpec> {
    let (vocab, d) = (c.vocab_size, c.hidden_size);
    let mut ops = vec![embedding_op(vocab, d)];
    layer_norm_ops(&mut ops, "transformer.word_embeddings_layernorm", d, None);
    for i in 0..c.n_layer {
        let p = format!("transformer.h.{i}");
        let at = Some(i);
        layer_norm_ops(&mut ops, &format!("{p}.input_layernorm"), d, at);
        linear_ops(&mut ops, &format!("{p}.self_attention.query_key_value"), d, 3 * d, true, at, TensorRole::Qkv);
        ops.push(attention_core_op(&p, c.n_head, c.head_dim(), i));
        linear_ops(&mut ops, &format!("{p}.self_attention.dense"), d, d, true, at, TensorRole::O);
        layer_norm_ops(&mut ops, &format!("{p}.post_attention_layernorm"), d, at);
        linear_ops(&mut ops, &format!("{p}.mlp.dense_h_to_4h"), d, 4 * d, true, at, TensorRole::Fc1);
        linear_ops(&mut ops, &format!("{p}.mlp.dense_4h_to_h"), 4 * d, d, true, at, TensorRole::Fc2);
    }
    layer_norm_ops(&mut ops, "transformer.ln_f", d, None);
    ops.push(lm_head_op(vocab, d, c.tie_word_embeddings));
    ops
}
