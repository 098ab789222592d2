//! The op graph of a Llama-family model from its config alone, for planning a run (budgets,
//! estimates) without loading weights. Mirrors `Llama::op_graph`, which reads the loaded tensors.

use super::{OpKind, OpSpec, Stream, TensorRole};
use crate::model::config::LlamaConfig;

pub fn llama_ops(c: &LlamaConfig) -> Vec<OpSpec> {
    let (vocab, dim, ffn) = (c.vocab_size, c.hidden_size, c.intermediate_size);
    let mut ops = vec![OpSpec {
        name: "model.embed_tokens.weight".into(),
        kind: OpKind::Embedding { vocab, dim },
        layer: None,
        role: TensorRole::Embedding,
        stream: Stream::Input,
    }];
    let linear = |ops: &mut Vec<OpSpec>, prefix: String, d_in, d_out, bias: bool, layer, role| {
        ops.push(OpSpec {
            name: format!("{prefix}.weight"),
            kind: OpKind::Linear { d_in, d_out },
            layer: Some(layer),
            role,
            stream: Stream::Input,
        });
        if bias {
            ops.push(OpSpec {
                name: format!("{prefix}.bias"),
                kind: OpKind::Bias { dim: d_out },
                layer: Some(layer),
                role,
                stream: Stream::Input,
            });
        }
    };
    let norm = |name: String, layer| OpSpec {
        name,
        kind: OpKind::Norm { dim },
        layer: Some(layer),
        role: TensorRole::Norm,
        stream: Stream::Input,
    };
    for i in 0..c.num_hidden_layers {
        let p = format!("model.layers.{i}");
        ops.push(norm(format!("{p}.input_layernorm.weight"), i));
        linear(&mut ops, format!("{p}.self_attn.q_proj"), dim, c.q_dim(), c.qkv_bias, i, TensorRole::Q);
        linear(&mut ops, format!("{p}.self_attn.k_proj"), dim, c.kv_dim(), c.qkv_bias, i, TensorRole::K);
        linear(&mut ops, format!("{p}.self_attn.v_proj"), dim, c.kv_dim(), c.qkv_bias, i, TensorRole::V);
        ops.push(OpSpec {
            name: format!("{p}.self_attn.core"),
            kind: OpKind::AttentionCore { n_heads: c.num_attention_heads, head_dim: c.head_dim, causal: true },
            layer: Some(i),
            role: TensorRole::Other,
            stream: Stream::Input,
        });
        linear(&mut ops, format!("{p}.self_attn.o_proj"), c.q_dim(), dim, c.o_bias, i, TensorRole::O);
        ops.push(norm(format!("{p}.post_attention_layernorm.weight"), i));
        linear(&mut ops, format!("{p}.mlp.gate_proj"), dim, ffn, c.mlp_bias, i, TensorRole::Gate);
        linear(&mut ops, format!("{p}.mlp.up_proj"), dim, ffn, c.mlp_bias, i, TensorRole::Up);
        linear(&mut ops, format!("{p}.mlp.down_proj"), ffn, dim, c.mlp_bias, i, TensorRole::Down);
    }
    ops.push(OpSpec {
        name: "model.norm.weight".into(),
        kind: OpKind::Norm { dim },
        layer: None,
        role: TensorRole::Norm,
        stream: Stream::Input,
    });
    let tied = c.tie_word_embeddings;
    let name = if tied { "lm_head (tied to model.embed_tokens.weight)" } else { "lm_head.weight" };
    ops.push(OpSpec {
        name: name.into(),
        kind: OpKind::LmHead { vocab, dim, tied },
        layer: None,
        role: TensorRole::LmHead,
        stream: Stream::Input,
    });
    ops
}
