//! The op builders the loader records an architecture's graph with (`model::loader`), so that
//! ops of one kind are named, typed and given roles alike whatever the architecture.

use super::{OpKind, OpSpec, Stream, TensorRole};

/// An op list under construction, in execution order. Ops run on the current stream
/// ([`Stream::Input`] until [`OpList::stream`] says otherwise).
#[derive(Default)]
pub(crate) struct OpList {
    ops: Vec<OpSpec>,
    stream: Stream,
}

impl OpList {
    pub fn finish(self) -> Vec<OpSpec> {
        self.ops
    }

    /// The stream the following ops run on (an encoder-decoder's source or target).
    pub fn stream(&mut self, stream: Stream) {
        self.stream = stream;
    }

    fn push(&mut self, name: String, kind: OpKind, layer: Option<usize>, role: TensorRole) {
        self.ops.push(OpSpec { name, kind, layer, role, stream: self.stream });
    }

    /// A token or position table `name` of `[vocab, dim]`.
    pub fn embedding(&mut self, name: &str, vocab: usize, dim: usize) {
        self.push(name.into(), OpKind::Embedding { vocab, dim }, None, TensorRole::Embedding);
    }

    /// `{prefix}.weight` of a norm, then `{prefix}.bias` when it has one (LayerNorm).
    pub fn norm(&mut self, prefix: &str, dim: usize, bias: bool, layer: Option<usize>) {
        self.push(format!("{prefix}.weight"), OpKind::Norm { dim }, layer, TensorRole::Norm);
        if bias {
            self.push(format!("{prefix}.bias"), OpKind::NormBias { dim }, layer, TensorRole::Norm);
        }
    }

    /// `{prefix}.weight` of a linear, then `{prefix}.bias` when it has one, both with its role.
    pub fn linear(&mut self, prefix: &str, d_in: usize, d_out: usize, bias: bool, layer: Option<usize>, role: TensorRole) {
        self.push(format!("{prefix}.weight"), OpKind::Linear { d_in, d_out }, layer, role);
        if bias {
            self.push(format!("{prefix}.bias"), OpKind::Bias { dim: d_out }, layer, role);
        }
    }

    /// The weightless `softmax(QK^T)V` of the attention module `prefix`, as `{prefix}.core`:
    /// causal, or bidirectional (an encoder's self-attention).
    pub fn self_attention_core(&mut self, prefix: &str, n_heads: usize, head_dim: usize, layer: Option<usize>, causal: bool) {
        let kind = OpKind::AttentionCore { n_heads, head_dim, causal };
        self.push(format!("{prefix}.core"), kind, layer, TensorRole::Other);
    }

    /// The weightless cross-attention of the module `prefix` over the input stream, as `{prefix}.core`.
    pub fn cross_attention_core(&mut self, prefix: &str, n_heads: usize, head_dim: usize, layer: Option<usize>) {
        let kind = OpKind::CrossAttentionCore { n_heads, head_dim };
        self.push(format!("{prefix}.core"), kind, layer, TensorRole::Other);
    }

    /// A relative position bias table `name` of `[buckets, n_heads]` shared by the `layers` blocks of a
    /// stack, owned by block `layer`.
    pub fn relative_bias(&mut self, name: &str, buckets: usize, n_heads: usize, layers: usize, causal: bool, layer: Option<usize>) {
        let kind = OpKind::RelativeBias { buckets, n_heads, layers, causal };
        self.push(name.into(), kind, layer, TensorRole::Other);
    }

    /// The output head; when tied, a chain node named after the embedding it shares.
    pub fn lm_head(&mut self, embedding: &str, vocab: usize, dim: usize, tied: bool) {
        let name = if tied { format!("lm_head (tied to {embedding})") } else { "lm_head.weight".into() };
        self.push(name, OpKind::LmHead { vocab, dim, tied }, None, TensorRole::LmHead);
    }
}
