//! The op graph of a T5 model from its config alone, for planning a run without loading weights.
//! Mirrors `T5::op_graph`, which reads the loaded tensors; the head counts as tied when the config
//! says so (transformers 5 writes `tie_word_embeddings: true` even for FLAN-T5, whose checkpoint has
//! its own `lm_head.weight`: the totals are the same, only the node its weight gradient sits on differs).

use super::{OpKind, OpSpec, Stream, TensorRole};
use crate::model::t5::{FeedForwardProj, T5Config};

pub fn t5_ops(c: &T5Config) -> Vec<OpSpec> {
    let (vocab, dim, inner, ff) = (c.vocab_size, c.d_model, c.inner_dim(), c.d_ff);
    let op = |name: String, kind, layer, role, stream| OpSpec { name, kind, layer, role, stream };
    let linear = |name: String, d_in, d_out, layer, role, stream| {
        op(format!("{name}.weight"), OpKind::Linear { d_in, d_out }, Some(layer), role, stream)
    };
    let norm = |name: String, layer, stream| op(name, OpKind::Norm { dim }, layer, TensorRole::Norm, stream);
    let mut ops = vec![op("shared.weight".into(), OpKind::Embedding { vocab, dim }, None, TensorRole::Embedding, Stream::Input)];
    let stack = |ops: &mut Vec<OpSpec>, name: &str, blocks: usize, first: usize, stream: Stream| {
        let decoder = stream == Stream::Decoder;
        for i in 0..blocks {
            let (layer, p) = (first + i, format!("{name}.block.{i}.layer"));
            ops.push(norm(format!("{p}.0.layer_norm.weight"), Some(layer), stream));
            for (proj, role) in [("q", TensorRole::Q), ("k", TensorRole::K), ("v", TensorRole::V)] {
                ops.push(linear(format!("{p}.0.SelfAttention.{proj}"), dim, inner, layer, role, stream));
            }
            if i == 0 {
                let (buckets, n_heads) = (c.relative_attention_num_buckets, c.num_heads);
                let kind = OpKind::RelativeBias { buckets, n_heads, layers: blocks, causal: decoder };
                ops.push(op(format!("{p}.0.SelfAttention.relative_attention_bias.weight"), kind, Some(layer), TensorRole::Other, stream));
            }
            let core = OpKind::AttentionCore { n_heads: c.num_heads, head_dim: c.d_kv, causal: decoder };
            ops.push(op(format!("{p}.0.SelfAttention.core"), core, Some(layer), TensorRole::Other, stream));
            ops.push(linear(format!("{p}.0.SelfAttention.o"), inner, dim, layer, TensorRole::O, stream));
            if decoder {
                ops.push(norm(format!("{p}.1.layer_norm.weight"), Some(layer), stream));
                ops.push(linear(format!("{p}.1.EncDecAttention.q"), dim, inner, layer, TensorRole::Q, stream));
                let core = OpKind::CrossAttentionCore { n_heads: c.num_heads, head_dim: c.d_kv };
                ops.push(op(format!("{p}.1.EncDecAttention.core"), core, Some(layer), TensorRole::Other, stream));
                ops.push(linear(format!("{p}.1.EncDecAttention.o"), inner, dim, layer, TensorRole::O, stream));
            }
            let f = format!("{p}.{}", if decoder { 2 } else { 1 });
            ops.push(norm(format!("{f}.layer_norm.weight"), Some(layer), stream));
            let ffn: &[(&str, usize, usize, TensorRole)] = match c.feed_forward_proj {
                FeedForwardProj::Relu => &[("wi", dim, ff, TensorRole::Up), ("wo", ff, dim, TensorRole::Down)],
                FeedForwardProj::GatedGelu => {
                    &[("wi_0", dim, ff, TensorRole::Gate), ("wi_1", dim, ff, TensorRole::Up), ("wo", ff, dim, TensorRole::Down)]
                }
            };
            for &(n, d_in, d_out, role) in ffn {
                ops.push(linear(format!("{f}.DenseReluDense.{n}"), d_in, d_out, layer, role, stream));
            }
        }
        ops.push(norm(format!("{name}.final_layer_norm.weight"), None, stream));
    };
    stack(&mut ops, "encoder", c.num_layers, 0, Stream::Input);
    // The cross-attention keys/values read the encoder output and run before the decoder.
    for i in 0..c.num_decoder_layers {
        let (layer, p) = (c.num_layers + i, format!("decoder.block.{i}.layer.1.EncDecAttention"));
        ops.push(linear(format!("{p}.k"), dim, inner, layer, TensorRole::K, Stream::Input));
        ops.push(linear(format!("{p}.v"), dim, inner, layer, TensorRole::V, Stream::Input));
    }
    stack(&mut ops, "decoder", c.num_decoder_layers, c.num_layers, Stream::Decoder);
    let tied = c.tie_word_embeddings;
    let name = if tied { "lm_head (tied to shared.weight)" } else { "lm_head.weight" };
    ops.push(op(name.into(), OpKind::LmHead { vocab, dim, tied }, None, TensorRole::LmHead, Stream::Decoder));
    ops
}

/// The accounting of the GreenTrainer reference (`tensor_flops.py`), which the paper's FLAN-T5 figures
/// follow: the cross-attention keys/values are charged at the decoder length, although they project
/// the encoder output. Only for reproducing the paper; the engine charges what runs.
pub fn paper_accounting(mut ops: Vec<OpSpec>) -> Vec<OpSpec> {
    for op in &mut ops {
        if op.name.ends_with(".EncDecAttention.k.weight") || op.name.ends_with(".EncDecAttention.v.weight") {
            op.stream = Stream::Decoder;
        }
    }
    ops
}
