//! Scaled dot-product attention as one kernel with its own backward, flash-style: scores and
//! probabilities exist only for one block of queries at a time (CPU) or one query (wgpu), never as
//! the `[B, H, S, T]` tensors autodiff would otherwise keep per layer. Grouped-query attention
//! reads each key/value head in place (no `repeat_kv` copies), causal order and right padding are
//! lengths rather than an additive `S x T` mask, and ALiBi's bias is computed from its slopes.
//! A dense bias `[1 or B, H, S, T]` (T5's relative position bias) is read, not copied per layer,
//! and gets its own gradient pass, run only when the bias is trained.
//! The backward pass recomputes the probabilities from the row log-sum-exp the forward saves.

use burn::backend::Backend;
use burn::backend::backend_extension;
use burn::backend::fusion::custom::TensorSpec;
use burn::backend::tensor::FloatTensor;
use burn::tensor::{Shape, Tensor, TensorData};

/// What each query sees, beside `q`, `k` and `v`.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionSpec {
    /// Multiplies `q . k` (`1 / sqrt(head_dim)` for most models).
    pub scale: f32,
    /// Causal order: query `i` of this call sees keys `j <= past + i`; `None`: every key.
    pub causal_past: Option<u32>,
    /// Real keys per batch row, the rest being right padding; empty: every key is real.
    pub key_lengths: Vec<u32>,
    /// ALiBi: per query head, `slope * j` is added to the score of key `j`; empty: no bias.
    pub alibi_slopes: Vec<f32>,
    /// The ops' `bias` input is a dense `[1 or B, H, S, T]` bias added to the scores; otherwise it
    /// is an unused one-element placeholder (set by [`attention`] from its `bias` argument).
    pub dense_bias: bool,
}

impl AttentionSpec {
    /// Keys `0..visible` that query `i` of batch row `b` sees, among `t`: always a prefix.
    #[inline]
    pub fn visible(&self, b: usize, i: usize, t: usize) -> usize {
        let mut n = t;
        if let Some(past) = self.causal_past {
            n = n.min(past as usize + i + 1);
        }
        if let Some(&len) = self.key_lengths.get(b) {
            n = n.min(len as usize);
        }
        n
    }

    /// ALiBi's additive bias of query head `h` on key `j`.
    #[inline]
    pub fn alibi(&self, h: usize, j: usize) -> f32 {
        self.alibi_slopes.get(h).map_or(0.0, |s| s * j as f32)
    }
}

#[backend_extension(Cube, Flex, Fusion, Autodiff)]
pub trait AttentionOps: Backend {
    /// `softmax(scale q k^T + alibi + bias, masked) v` for `q [B, H, S, D]` and `k`, `v
    /// [B, Hk, T, D]` (`H` a multiple of `Hk`), `bias` as [`AttentionSpec::dense_bias`] says;
    /// returns the output `[B, H, S, D]` and each query's log-sum-exp of scores `[B, H, S]` (+inf
    /// for a query that sees no key, whose output is 0).
    #[fusion(meta = |q, _k, _v, _bias, _spec| (q.clone(), TensorSpec::new(Shape::new([q.shape[0], q.shape[1], q.shape[2]]), q.dtype)))]
    fn flash_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>);

    /// The gradients `(dq, dk, dv)` from the output gradient `dout`, the inputs, and the forward's
    /// output and log-sum-exp.
    #[fusion(meta = |_dout, q, k, v, _bias, _out, _lse, _spec| (q.clone(), k.clone(), v.clone()))]
    #[allow(clippy::too_many_arguments)]
    fn flash_attention_backward(
        dout: FloatTensor<Self>,
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// The dense bias's gradient, in its shape (summed over the batch rows a `[1, H, S, T]` bias
    /// serves): the score gradients, which the other passes never store.
    #[fusion(meta = |_dout, _q, _k, _v, bias, _out, _lse, _spec| bias.clone())]
    #[allow(clippy::too_many_arguments)]
    fn flash_attention_bias_backward(
        dout: FloatTensor<Self>,
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        out: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        spec: AttentionSpec,
    ) -> FloatTensor<Self>;
}

/// The widest head the wgpu kernel holds in registers (shaders/attention.wgsl's MAX_D).
pub const ATTENTION_MAX_HEAD_DIM: usize = 256;

/// Attention on any device (see [`AttentionOps::flash_attention`]), differentiable in q, k, v and
/// `bias` (`[1 or B, H, S, T]`, added to the scores); on wgpu the head dimension is at most
/// [`ATTENTION_MAX_HEAD_DIM`].
pub fn attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<4>>, spec: &AttentionSpec) -> Tensor<4> {
    let spec = AttentionSpec { dense_bias: bias.is_some(), ..spec.clone() };
    let bias = bias.unwrap_or_else(|| Tensor::zeros([1, 1, 1, 1], &q.device()));
    let (out, _lse) =
        burn::backend::Dispatch::flash_attention(q.into_dispatch(), k.into_dispatch(), v.into_dispatch(), bias.into_dispatch(), spec);
    Tensor::from_dispatch(out)
}

/// The same attention in plain tensor ops ([`eager_attention`] with the spec's masking and ALiBi
/// as an additive bias, 0 or `f32::MIN`, plus `bias`): what the kernels are tested against.
pub fn attention_reference(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, bias: Option<Tensor<4>>, spec: &AttentionSpec) -> Tensor<4> {
    let [b, h, s, _] = q.dims();
    let t = k.dims()[2];
    let mut masked = vec![0f32; b * h * s * t];
    for (n, value) in masked.iter_mut().enumerate() {
        let (j, i, head, row) = (n % t, (n / t) % s, (n / (s * t)) % h, n / (h * s * t));
        *value = if j < spec.visible(row, i, t) { spec.alibi(head, j) } else { f32::MIN };
    }
    let masked = Tensor::<4>::from_data(TensorData::new(masked, [b, h, s, t]), &q.device());
    eager_attention(q, k, v, spec.scale as f64, Some(bias.map_or(masked.clone(), |bias| bias + masked)))
}

/// transformers' eager attention in tensor ops: K/V repeated per query head, the full scores
/// `scale q k^T + bias` (`bias` broadcast to `[B, H, S, T]`), softmax. A scale of 1 is not
/// applied, as HF OPT (which scales the queries instead) does not.
pub fn eager_attention(q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, scale: f64, bias: Option<Tensor<4>>) -> Tensor<4> {
    let h = q.dims()[1];
    let [b, hk, t, d] = k.dims();
    let repeat = |x: Tensor<4>| if h == hk { x } else { x.unsqueeze_dim::<5>(2).repeat_dim(2, h / hk).reshape([b, h, t, d]) };
    let mut scores = q.matmul(repeat(k).swap_dims(2, 3));
    if scale != 1.0 {
        scores = scores.mul_scalar(scale);
    }
    if let Some(bias) = bias {
        scores = scores + bias;
    }
    burn::tensor::activation::softmax(scores, 3).matmul(repeat(v))
}
