//! Where an architecture declares its parameters, once: its `declare` (behind `load`) asks this
//! loader for every module by HF name and shape, in execution order, and the loader both reads the
//! values and records the op graph the profiler costs. Planning a run from a config alone
//! (`llama_ops` and its siblings) runs the same declaration with no source
//! ([`Loader::planning`]), so the graph is never spelled twice.

use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};

use super::graph::ops::OpList;
use super::graph::{OpSpec, Stream, TensorRole};
use super::linear::Linear;
use super::norm::{LayerNorm, RmsNorm};
use super::params::Table;
use super::weight::{QuantMatrix, Weight};
use crate::error::{Error, Result};

/// Supplies each parameter's values (f32, row-major, HF shape) by HF name; the loader validates
/// the shape it is asked for against its file.
pub type TensorSource<'a> = dyn FnMut(&str, &[usize]) -> Result<Vec<f32>> + 'a;

/// Supplies a linear weight of `[out, in]` kept in its file's quantization (`frozen_precision =
/// source`) by HF name, or `None` to read it through the [`TensorSource`]: a model loaded so never
/// holds an f32 copy of those weights.
pub type WeightSource<'a> = dyn FnMut(&str, [usize; 2]) -> Result<Option<QuantMatrix>> + 'a;

/// Reads parameters from a [`TensorSource`] onto a device while recording the op graph.
pub(crate) struct Loader<'s, 'a> {
    /// `None` while planning: every tensor is empty, only the graph is wanted.
    source: Option<&'s mut TensorSource<'a>>,
    /// Asked first for each linear weight, when set.
    weights: Option<&'s mut WeightSource<'a>>,
    device: Device,
    ops: OpList,
    /// The block the modules declared next belong to.
    block: Option<usize>,
}

impl<'s, 'a> Loader<'s, 'a> {
    pub(crate) fn new(source: &'s mut TensorSource<'a>, device: &Device) -> Self {
        Self { source: Some(source), weights: None, device: device.clone(), ops: OpList::default(), block: None }
    }

    /// The loader asking `weights` first for each linear weight.
    pub(crate) fn with_weights(self, weights: Option<&'s mut WeightSource<'a>>) -> Self {
        Self { weights, ..self }
    }

    /// A loader that reads nothing and creates only zero-sized tensors: the architecture's
    /// declaration then yields a model whose only use is its op graph.
    pub(crate) fn planning() -> Self {
        Self { source: None, weights: None, device: Device::flex(), ops: OpList::default(), block: None }
    }

    /// The block the modules declared next belong to (`None`: before or after every block).
    pub(crate) fn block(&mut self, block: Option<usize>) {
        self.block = block;
    }

    /// The token stream the ops declared next run on (an encoder-decoder's source or target).
    pub(crate) fn stream(&mut self, stream: Stream) {
        self.ops.stream(stream);
    }

    /// The op graph of what was declared, in declaration (execution) order.
    pub(crate) fn graph(self) -> Arc<[OpSpec]> {
        self.ops.finish().into()
    }

    fn read<const R: usize>(&mut self, name: &str, shape: [usize; R]) -> Result<Tensor<R>> {
        match &mut self.source {
            Some(source) => Ok(Tensor::from_data(TensorData::new(source(name, &shape)?, shape), &self.device)),
            None => Ok(Tensor::zeros([0; R], &self.device)),
        }
    }

    /// A token or position table `name` of `[vocab, dim]`.
    pub(crate) fn embedding(&mut self, name: &str, vocab: usize, dim: usize) -> Result<Table> {
        self.ops.embedding(name, vocab, dim);
        Ok(Table { name: name.into(), weight: self.read(name, [vocab, dim])? })
    }

    /// A linear layer from `d_in` to `d_out` features: `{prefix}.weight`, stored `[d_out, d_in]` as
    /// in HF checkpoints, then `{prefix}.bias` when `bias`.
    pub(crate) fn linear(&mut self, prefix: &str, d_in: usize, d_out: usize, bias: bool, role: TensorRole) -> Result<Linear> {
        self.ops.linear(prefix, d_in, d_out, bias, self.block, role);
        let name = format!("{prefix}.weight");
        let quantized = match (&mut self.weights, &self.source) {
            (Some(weights), Some(_)) => weights(&name, [d_out, d_in])?,
            _ => None,
        };
        let weight = match quantized {
            Some(q) => Weight::Quantized(q),
            None => Weight::Float(self.read(&name, [d_out, d_in])?),
        };
        let bias = if bias { Some(self.read(&format!("{prefix}.bias"), [d_out])?) } else { None };
        Ok(Linear::new(prefix.into(), weight, bias))
    }

    /// An RMSNorm's `{prefix}.weight`.
    pub(crate) fn rms_norm(&mut self, prefix: &str, dim: usize, eps: f64) -> Result<RmsNorm> {
        self.ops.norm(prefix, dim, false, self.block);
        Ok(RmsNorm { name: prefix.into(), weight: self.read(&format!("{prefix}.weight"), [dim])?, eps })
    }

    /// A LayerNorm's `{prefix}.weight` then `{prefix}.bias` when `affine`, nothing otherwise.
    pub(crate) fn layer_norm(&mut self, prefix: &str, dim: usize, affine: bool, eps: f64) -> Result<LayerNorm> {
        if !affine {
            return Ok(LayerNorm { name: prefix.into(), weight: None, bias: None, eps });
        }
        self.ops.norm(prefix, dim, true, self.block);
        let weight = self.read(&format!("{prefix}.weight"), [dim])?;
        let bias = self.read(&format!("{prefix}.bias"), [dim])?;
        Ok(LayerNorm { name: prefix.into(), weight: Some(weight), bias: Some(bias), eps })
    }

    /// The weightless `softmax(QK^T)V` of the attention module `prefix` over its own stream.
    pub(crate) fn attention_core(&mut self, prefix: &str, n_heads: usize, head_dim: usize, causal: bool) {
        self.ops.self_attention_core(prefix, n_heads, head_dim, self.block, causal);
    }

    /// The weightless cross-attention of the module `prefix` over the input stream.
    pub(crate) fn cross_attention_core(&mut self, prefix: &str, n_heads: usize, head_dim: usize) {
        self.ops.cross_attention_core(prefix, n_heads, head_dim, self.block);
    }

    /// T5's relative position bias table `name` of `[buckets, n_heads]`, shared by the `layers`
    /// blocks of a stack and owned by the current block.
    pub(crate) fn relative_bias(&mut self, name: &str, buckets: usize, n_heads: usize, layers: usize, causal: bool) -> Result<Table> {
        self.ops.relative_bias(name, buckets, n_heads, layers, causal, self.block);
        Ok(Table { name: name.into(), weight: self.read(name, [buckets, n_heads])? })
    }

    /// The output head: `lm_head.weight` of `[vocab, dim]`, or none when `tied` to `embedding`.
    pub(crate) fn lm_head(&mut self, embedding: &str, vocab: usize, dim: usize, tied: bool) -> Result<Option<Table>> {
        self.ops.lm_head(embedding, vocab, dim, tied);
        if tied {
            return Ok(None);
        }
        Ok(Some(Table { name: "lm_head.weight".into(), weight: self.read("lm_head.weight", [vocab, dim])? }))
    }

    /// [`Loader::lm_head`] untied when the checkpoint has `lm_head.weight`, tied when it has not and
    /// `may_tie` (transformers 5's rule for T5); planning takes `may_tie` as tied.
    pub(crate) fn lm_head_if_present(&mut self, embedding: &str, vocab: usize, dim: usize, may_tie: bool) -> Result<Option<Table>> {
        if self.source.is_none() {
            return self.lm_head(embedding, vocab, dim, may_tie);
        }
        match self.read("lm_head.weight", [vocab, dim]) {
            Ok(weight) => {
                self.ops.lm_head(embedding, vocab, dim, false);
                Ok(Some(Table { name: "lm_head.weight".into(), weight }))
            }
            Err(Error::MissingTensor { .. }) if may_tie => self.lm_head(embedding, vocab, dim, true),
            Err(e) => Err(e),
        }
    }
}
