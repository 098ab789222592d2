//! The op graph of a T5 model from its config, which fixes every shape `T5::load` reads: for planning
//! a run without weights, and `T5::op_graph`. The head counts as tied when the config says so
//! (transformers 5 writes `tie_word_embeddings: true` even for FLAN-T5, whose checkpoint has its own
//! `lm_head.weight`: the totals are the same, only the node its weight gradient sits on differs);
//! `T5::op_graph` ties it as loaded.

use super::ops::OpList;
use super::{OpSpec, Stream, TensorRole};
use crate::model::t5::{FeedForwardProj, T5Config};

pub fn t5_ops(c: &T5Config) -> Vec<OpSpec> {
    ops(c, c.tie_word_embeddings)
}

/// [`t5_ops`] with the head tied or not as the loaded checkpoint has it (`T5::op_graph`).
pub(crate) fn ops(c: &T5Config, tied_head: bool) -> Vec<OpSpec> {
    let (d, inner) = (c.d_model, c.inner_dim());
    let mut ops = OpList::default();
    ops.embedding("shared.weight", c.vocab_size, d);
    stack(&mut ops, c, "encoder", c.num_layers, 0);
    // The cross-attention keys/values read the encoder output and run before the decoder.
    for i in 0..c.num_decoder_layers {
        let (p, at) = (format!("decoder.block.{i}.layer.1.EncDecAttention"), Some(c.num_layers + i));
        ops.linear(&format!("{p}.k"), d, inner, false, at, TensorRole::K);
        ops.linear(&format!("{p}.v"), d, inner, false, at, TensorRole::V);
    }
    ops.stream(Stream::Decoder);
    stack(&mut ops, c, "decoder", c.num_decoder_layers, c.num_layers);
    ops.lm_head("shared.weight", c.vocab_size, d, tied_head);
    ops.finish()
}

/// A stack's blocks (layers numbered from `first`) and final norm, on the list's current stream;
/// the decoder's cross-attention keys/values are the caller's.
fn stack(ops: &mut OpList, c: &T5Config, name: &str, blocks: usize, first: usize) {
    let (d, inner, ff, heads) = (c.d_model, c.inner_dim(), c.d_ff, c.num_heads);
    let decoder = name == "decoder";
    for i in 0..blocks {
        let (layer, p) = (first + i, format!("{name}.block.{i}.layer"));
        let at = Some(layer);
        ops.norm(&format!("{p}.0.layer_norm"), d, false, at);
        let a = format!("{p}.0.SelfAttention");
        ops.linear(&format!("{a}.q"), d, inner, false, at, TensorRole::Q);
        ops.linear(&format!("{a}.k"), d, inner, false, at, TensorRole::K);
        ops.linear(&format!("{a}.v"), d, inner, false, at, TensorRole::V);
        if i == 0 {
            let bias = format!("{a}.relative_attention_bias.weight");
            ops.relative_bias(&bias, c.relative_attention_num_buckets, heads, blocks, decoder, layer);
        }
        ops.self_attention_core(&a, heads, c.d_kv, layer, decoder);
        ops.linear(&format!("{a}.o"), inner, d, false, at, TensorRole::O);
        if decoder {
            let x = format!("{p}.1.EncDecAttention");
            ops.norm(&format!("{p}.1.layer_norm"), d, false, at);
            ops.linear(&format!("{x}.q"), d, inner, false, at, TensorRole::Q);
            ops.cross_attention_core(&x, heads, c.d_kv, layer);
            ops.linear(&format!("{x}.o"), inner, d, false, at, TensorRole::O);
        }
        let f = format!("{p}.{}", if decoder { 2 } else { 1 });
        ops.norm(&format!("{f}.layer_norm"), d, false, at);
        let ffn: &[(&str, usize, usize, TensorRole)] = match c.feed_forward_proj {
            FeedForwardProj::Relu => &[("wi", d, ff, TensorRole::Up), ("wo", ff, d, TensorRole::Down)],
            FeedForwardProj::GatedGelu => {
                &[("wi_0", d, ff, TensorRole::Gate), ("wi_1", d, ff, TensorRole::Up), ("wo", ff, d, TensorRole::Down)]
            }
        };
        for &(n, d_in, d_out, role) in ffn {
            ops.linear(&format!("{f}.DenseReluDense.{n}"), d_in, d_out, false, at, role);
        }
    }
    ops.norm(&format!("{name}.final_layer_norm"), d, false, None);
}
