//! The op graph of a Llama-family model from its config, which fixes every shape `Llama::load`
//! reads: for planning a run (budgets, estimates) without weights, and `Llama::op_graph`.

use super::ops::OpList;
use super::{OpSpec, TensorRole};
use crate::model::config::LlamaConfig;

pub fn llama_ops(c: &LlamaConfig) -> Vec<OpSpec> {
    let (vocab, d, ffn) = (c.vocab_size, c.hidden_size, c.intermediate_size);
    let mut ops = OpList::default();
    ops.embedding("model.embed_tokens.weight", vocab, d);
    for i in 0..c.num_hidden_layers {
        let (p, at) = (format!("model.layers.{i}"), Some(i));
        ops.norm(&format!("{p}.input_layernorm"), d, false, at);
        ops.linear(&format!("{p}.self_attn.q_proj"), d, c.q_dim(), c.qkv_bias, at, TensorRole::Q);
        ops.linear(&format!("{p}.self_attn.k_proj"), d, c.kv_dim(), c.qkv_bias, at, TensorRole::K);
        ops.linear(&format!("{p}.self_attn.v_proj"), d, c.kv_dim(), c.qkv_bias, at, TensorRole::V);
        ops.attention_core(&format!("{p}.self_attn"), c.num_attention_heads, c.head_dim, i);
        ops.linear(&format!("{p}.self_attn.o_proj"), c.q_dim(), d, c.o_bias, at, TensorRole::O);
        ops.norm(&format!("{p}.post_attention_layernorm"), d, false, at);
        ops.linear(&format!("{p}.mlp.gate_proj"), d, ffn, c.mlp_bias, at, TensorRole::Gate);
        ops.linear(&format!("{p}.mlp.up_proj"), d, ffn, c.mlp_bias, at, TensorRole::Up);
        ops.linear(&format!("{p}.mlp.down_proj"), ffn, d, c.mlp_bias, at, TensorRole::Down);
    }
    ops.norm("model.norm", d, false, None);
    ops.lm_head("model.embed_tokens.weight", vocab, d, c.tie_word_embeddings);
    ops.finish()
}
