//! RMSNorm and SwiGLU as single kernels with their own backward: written as tensor ops, autodiff
//! records about 7 passes (and as many fresh buffers) for an RMSNorm forward and 14 for its
//! backward, and 4 + 8 for SwiGLU's `silu(gate) * up`, on every block of every step.

use burn::backend::Backend;
use burn::backend::backend_extension;
use burn::backend::tensor::FloatTensor;
use burn::tensor::{Shape, Tensor};

#[backend_extension(Cube, Flex, Fusion, Autodiff)]
pub trait FusedOps: Backend {
    /// RMSNorm over the rows of `x [n, d]` with weight `w [d]`: `x / sqrt(mean(x^2) + eps) * w`.
    #[fusion(dtype = x, shape = Shape::new([x[0], x[1]]))]
    fn rms_norm(x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;

    /// RMSNorm's input gradient: `r (dy w) - x r^3 / d * sum(dy w x)` per row, `r` the inverse RMS.
    #[fusion(dtype = x, shape = Shape::new([x[0], x[1]]))]
    fn rms_norm_dx(dy: FloatTensor<Self>, x: FloatTensor<Self>, w: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;

    /// RMSNorm's weight gradient `[d]`: `sum over rows of dy x r`.
    #[fusion(dtype = x, shape = Shape::new([x[1]]))]
    fn rms_norm_dw(dy: FloatTensor<Self>, x: FloatTensor<Self>, eps: f32) -> FloatTensor<Self>;

    /// SwiGLU's gating, element-wise on equal shapes: `silu(gate) * up`.
    #[fusion(dtype = gate, shape = Shape::new([gate[0], gate[1]]))]
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self>;

    /// SwiGLU's gradients `(d gate, d up)`: with `s = sigmoid(gate)`,
    /// `d up = dy gate s` and `d gate = dy up s (1 + gate (1 - s))`.
    #[fusion(meta = |_dy, gate, up| (gate.clone(), up.clone()))]
    fn swiglu_backward(dy: FloatTensor<Self>, gate: FloatTensor<Self>, up: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>);
}

/// One row's inverse RMS, `1 / sqrt(mean(x^2) + eps)`: the CPU kernels' definition.
#[inline]
pub(super) fn inv_rms(row: &[f32], eps: f32) -> f32 {
    let ss: f32 = row.iter().map(|v| v * v).sum();
    1.0 / (ss / row.len() as f32 + eps).sqrt()
}

/// `silu(g) u` and its two partial derivatives' factors: `(silu(g), s (1 + g (1 - s)))`.
#[inline]
pub(super) fn silu_and_slope(g: f32) -> (f32, f32) {
    let s = 1.0 / (1.0 + (-g).exp());
    (g * s, s * (1.0 + g * (1.0 - s)))
}

/// RMSNorm over the last dimension of `x [.., d]` on any device, differentiable in `x` and `w`.
pub fn rms_norm<const D: usize>(x: Tensor<D>, w: Tensor<1>, eps: f64) -> Tensor<D> {
    let dims = x.dims();
    let d = dims[D - 1];
    let rows = x.reshape([-1, d as i32]);
    let y = burn::backend::Dispatch::rms_norm(rows.into_dispatch(), w.into_dispatch(), eps as f32);
    Tensor::<2>::from_dispatch(y).reshape(dims)
}

/// `silu(gate) * up` on any device, differentiable in both.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    let dims = gate.dims();
    let d = dims[D - 1];
    let (gate, up) = (gate.reshape([-1, d as i32]), up.reshape([-1, d as i32]));
    let y = burn::backend::Dispatch::swiglu(gate.into_dispatch(), up.into_dispatch());
    Tensor::<2>::from_dispatch(y).reshape(dims)
}

/// RMSNorm in plain tensor ops: what the fused kernels are tested against.
pub fn rms_norm_reference<const D: usize>(x: Tensor<D>, w: Tensor<1>, eps: f64) -> Tensor<D> {
    let inv_rms = x.clone().square().mean_dim(D - 1).add_scalar(eps).sqrt().recip();
    x * inv_rms * w.unsqueeze::<D>()
}

/// SwiGLU's gating in plain tensor ops (the reference).
pub fn swiglu_reference<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    burn::tensor::activation::silu(gate) * up
}

/// RMSNorm's weight gradient in backend tensor ops: a column sum over rows, which the
/// backend's reduction already does well on a GPU (wgpu's path).
pub(super) fn rms_norm_dw_ops<B: Backend>(dy: FloatTensor<B>, x: FloatTensor<B>, eps: f32) -> FloatTensor<B> {
    use burn::backend::TensorMetadata;
    let d = x.shape()[1];
    let inv = B::float_recip(B::float_sqrt(B::float_add_scalar(B::float_mean_dim(B::float_mul(x.clone(), x.clone()), 1), eps.into())));
    let scaled = B::float_mul(B::float_mul(dy, x), inv);
    B::float_reshape(B::float_sum_dim(scaled, 0), Shape::new([d]))
}
