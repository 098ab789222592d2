//! Custom kernels behind burn's backend extension, so the same engine code runs on wgpu (raw WGSL
//! from shaders/) and on the CPU (flex), each checked against a plain-tensor reference in tests:
//! - partial selection inside a weight matrix: gradients and AdamW updates for selected output
//!   rows only (an attention head, or N rows);
//! - fused AdamW over whole tensors (one pass over w, grad, m, v instead of ~15 tensor ops);
//! - RMSNorm and SwiGLU forward and backward, one pass each ([`fused`]);
//! - linear layers over frozen f16/bf16 weights, converted block by block inside the product
//!   ([`frozen`]);
//! - flash-style attention with GQA, causal order and padding as lengths, ALiBi and a trainable
//!   dense bias (T5) ([`attention`]).
//!
//! A partially trained linear layer keeps its full weight `W` frozen and takes a compact leaf
//! `W[rows]` that tracks gradients: [`masked_linear`] computes `x W^T` with `W`, and its backward
//! sends `dY^T X` for the listed rows (and nothing else) to the compact leaf.

pub mod attention;
mod attention_cpu;
mod autodiff;
mod cpu;
pub mod frozen;
mod frozen_cpu;
pub mod fused;
mod tune;
mod wgsl;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, backend_extension};
use burn::tensor::{Shape, Tensor};

pub use attention::{ATTENTION_MAX_HEAD_DIM, AttentionSpec, attention, attention_reference, eager_attention};
pub use fused::{rms_norm, rms_norm_reference, swiglu, swiglu_reference};
pub use tune::{DwPath, interleaved_best};

#[backend_extension(Cube, Flex, Fusion, Autodiff)]
pub trait MaskedGradOps: Backend {
    /// `dy[:, rows]^T x`: the weight gradient of the listed output rows, `[rows.len(), d_in]`.
    #[fusion(dtype = x, shape = Shape::new([rows.len(), x[1]]))]
    fn masked_dw(dy: FloatTensor<Self>, x: FloatTensor<Self>, rows: Vec<u32>, path: DwPath) -> FloatTensor<Self>;

    /// `x W^T` (`x [n, d_in]`, `w [d_out, d_in]`) whose weight gradient flows, for `rows` only,
    /// into `w_rows` (`[rows.len(), d_in]`, equal to `W[rows]`).
    #[fusion(dtype = x, shape = Shape::new([x[0], w[0]]))]
    fn masked_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, w_rows: FloatTensor<Self>, rows: Vec<u32>) -> FloatTensor<Self>;
}

#[backend_extension(Cube, Fusion)]
pub trait MaskedAdamWOps: Backend {
    /// Fused AdamW on the listed rows of `w` with compact `grad`, `m`, `v` (`[rows.len(), d_in]`);
    /// returns the updated `(w, m, v)`, written in place where the buffers are not shared.
    #[fusion(meta = |w, _grad, m, v, _rows, _hp| (w.clone(), m.clone(), v.clone()))]
    fn masked_adamw(
        w: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        rows: Vec<u32>,
        hp: AdamWHyper,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

#[backend_extension(Cube, Flex, Fusion)]
pub trait AdamWOps: Backend {
    /// Fused AdamW over whole flattened tensors `[n]`: returns the updated `(w, m, v)`, written in
    /// place where the buffers are not shared (a shared one is copied first, never changed).
    #[fusion(meta = |w, _grad, m, v, _hp| (w.clone(), m.clone(), v.clone()))]
    fn adamw(
        w: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        m: FloatTensor<Self>,
        v: FloatTensor<Self>,
        hp: AdamWHyper,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The per-step AdamW settings the fused kernels need (bias corrections are per tensor).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWHyper {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub bias_correction1: f32,
    pub bias_correction2: f32,
    /// Multiplies the gradient before use: gradient clipping's factor and 1 / accumulated
    /// batches, folded into the update instead of a pass of their own.
    pub grad_scale: f32,
}

impl AdamWHyper {
    /// The layout the shaders read (see shaders/adamw.wgsl).
    pub fn as_array(&self) -> [f32; 8] {
        [self.lr, self.beta1, self.beta2, self.eps, self.weight_decay, self.bias_correction1, self.bias_correction2, self.grad_scale]
    }

    /// One element's update: `(w, m, v)` after the step. The CPU kernel's body and the
    /// definition the shaders follow.
    #[inline(always)]
    pub fn update(&self, w: f32, g: f32, m: f32, v: f32) -> (f32, f32, f32) {
        let g = g * self.grad_scale;
        let m = self.beta1 * m + (1.0 - self.beta1) * g;
        let v = self.beta2 * v + (1.0 - self.beta2) * g * g;
        let step = (m / self.bias_correction1) / ((v / self.bias_correction2).sqrt() + self.eps);
        (w * (1.0 - self.lr * self.weight_decay) - self.lr * step, m, v)
    }
}

/// Fused AdamW over whole flattened tensors on any device (see [`AdamWOps::adamw`]).
pub fn adamw(w: Tensor<1>, grad: Tensor<1>, m: Tensor<1>, v: Tensor<1>, hp: AdamWHyper) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let (w, m, v) = burn::backend::Dispatch::adamw(w.into_dispatch(), grad.into_dispatch(), m.into_dispatch(), v.into_dispatch(), hp);
    (Tensor::from_dispatch(w), Tensor::from_dispatch(m), Tensor::from_dispatch(v))
}

/// The same update in plain tensor ops: what the fused kernels are tested against.
pub fn adamw_reference(w: Tensor<1>, grad: Tensor<1>, m: Tensor<1>, v: Tensor<1>, hp: AdamWHyper) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let g = grad.mul_scalar(hp.grad_scale);
    let m = m.mul_scalar(hp.beta1) + g.clone().mul_scalar(1.0 - hp.beta1);
    let v = v.mul_scalar(hp.beta2) + g.square().mul_scalar(1.0 - hp.beta2);
    let step = m.clone().div_scalar(hp.bias_correction1) / v.clone().div_scalar(hp.bias_correction2).sqrt().add_scalar(hp.eps);
    (w.mul_scalar(1.0 - hp.lr * hp.weight_decay) - step.mul_scalar(hp.lr), m, v)
}

/// dY's selected columns as a compact `[n, rows]` tensor.
fn selected_columns<B: Backend>(dy: FloatTensor<B>, rows: Vec<u32>) -> FloatTensor<B> {
    let n = rows.len();
    // A run of consecutive rows (e.g. a fully selected weight) is a slice: no gather, no copy.
    let contiguous = rows.windows(2).all(|w| w[1] == w[0] + 1);
    match rows.first() {
        Some(&first) if contiguous => {
            let start = first as usize;
            B::float_slice(dy, &[burn::tensor::Slice::from(..), burn::tensor::Slice::from(start..start + n)])
        }
        _ => {
            use burn::backend::TensorMetadata;
            let idx =
                B::int_from_data(burn::tensor::TensorData::new(rows.into_iter().map(i64::from).collect::<Vec<_>>(), [n]), &dy.device());
            B::float_select(dy, 1, idx)
        }
    }
}

/// `dy[:, rows]^T x` in backend tensor ops: dY's selected columns gathered, then the dense matmul
/// (the CPU's path, and one of the wgpu paths).
fn gather_matmul_dw<B: Backend>(dy: FloatTensor<B>, x: FloatTensor<B>, rows: Vec<u32>) -> FloatTensor<B> {
    B::float_matmul(B::float_transpose(selected_columns::<B>(dy, rows)), x)
}

/// The same product with the operands swapped, `(x^T dy[:, rows])^T`: a different problem shape
/// for the matmul, which tiles some compact sizes better. The result is a transposed view.
fn swapped_gather_matmul_dw<B: Backend>(dy: FloatTensor<B>, x: FloatTensor<B>, rows: Vec<u32>) -> FloatTensor<B> {
    B::float_transpose(B::float_matmul(B::float_transpose(x), selected_columns::<B>(dy, rows)))
}

/// `x W^T`: the forward of a partially trained linear is the dense one (only its backward differs).
fn dense_linear<B: Backend>(x: FloatTensor<B>, w: FloatTensor<B>) -> FloatTensor<B> {
    B::float_matmul(x, B::float_transpose(w))
}

/// `dy[:, rows]^T x` on any device; `path` picks the wgpu implementation (training uses `Auto`).
pub fn masked_dw(dy: Tensor<2>, x: Tensor<2>, rows: &[u32], path: DwPath) -> Tensor<2> {
    Tensor::from_dispatch(burn::backend::Dispatch::masked_dw(dy.into_dispatch(), x.into_dispatch(), rows.to_vec(), path))
}

/// `x W^T` training only `w_rows = W[rows]` (see the module docs).
pub fn masked_linear(x: Tensor<2>, w: Tensor<2>, w_rows: Tensor<2>, rows: &[u32]) -> Tensor<2> {
    Tensor::from_dispatch(burn::backend::Dispatch::masked_linear(
        x.into_dispatch(),
        w.into_dispatch(),
        w_rows.into_dispatch(),
        rows.to_vec(),
    ))
}

/// Fused masked AdamW; wgpu devices only (see [`runs_wgsl`]), the CPU path uses tensor ops.
pub fn masked_adamw(
    w: Tensor<2>,
    grad: Tensor<2>,
    m: Tensor<2>,
    v: Tensor<2>,
    rows: &[u32],
    hp: AdamWHyper,
) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let (w, m, v) = burn::backend::Dispatch::masked_adamw(
        w.into_dispatch(),
        grad.into_dispatch(),
        m.into_dispatch(),
        v.into_dispatch(),
        rows.to_vec(),
        hp,
    );
    (Tensor::from_dispatch(w), Tensor::from_dispatch(m), Tensor::from_dispatch(v))
}

/// Whether `device` runs the WGSL kernels (wgpu), rather than the CPU tensor-op path.
pub fn runs_wgsl(device: &burn::tensor::Device) -> bool {
    !matches!(device.clone().without_autodiff().as_dispatch(), burn::backend::DispatchDevice::Flex(_))
}

/// The row numbers as an index tensor for `select` / `select_assign` along dimension 0.
pub fn row_index(rows: &[u32], device: &burn::tensor::Device) -> Tensor<1, burn::tensor::Int> {
    Tensor::from_data(burn::tensor::TensorData::new(rows.iter().map(|&r| i64::from(r)).collect::<Vec<_>>(), [rows.len()]), device)
}
