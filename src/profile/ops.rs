//! The op builders every architecture's op list is made of, so that ops of one kind are named,
//! typed and given roles alike whatever the architecture.

use super::{OpKind, OpSpec, TensorRole};

/// An op list under construction, in execution order.
#[derive(Default)]
pub(crate) struct OpList(Vec<OpSpec>);

impl OpList {
    pub fn finish(self) -> Vec<OpSpec> {
        self.0
    }

    fn push(&mut self, name: String, kind: OpKind, layer: Option<usize>, role: TensorRole) {
        self.0.push(OpSpec { name, kind, layer, role });
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

    /// The weightless causal `softmax(QK^T)V` of the attention module `prefix`, as `{prefix}.core`.
    pub fn attention_core(&mut self, prefix: &str, n_heads: usize, head_dim: usize, layer: usize) {
        let kind = OpKind::AttentionCore { n_heads, head_dim, causal: true };
        self.push(format!("{prefix}.core"), kind, Some(layer), TensorRole::Other);
    }

    /// The output head; when tied, a chain node named after the embedding it shares.
    pub fn lm_head(&mut self, embedding: &str, vocab: usize, dim: usize, tied: bool) {
        let name = if tied { format!("lm_head (tied to {embedding})") } else { "lm_head.weight".into() };
        self.push(name, OpKind::LmHead { vocab, dim, tied }, None, TensorRole::LmHead);
    }
}
