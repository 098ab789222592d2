//! Partial selection inside a weight matrix: gradients and AdamW updates for selected output rows
//! only (an attention head, or N rows), with raw WGSL kernels on wgpu (shaders/) and an equivalent
//! tensor-op path on the CPU, behind one backend extension so the same engine code runs on both.
//!
//! A partially trained linear layer keeps its full weight `W` frozen and takes a compact leaf
//! `W[rows]` that tracks gradients: [`masked_linear`] computes `x W^T` with `W`, and its backward
//! sends `dY^T X` for the listed rows (and nothing else) to the compact leaf.

mod autodiff;
mod cpu;
mod tune;
mod wgsl;

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, backend_extension};
use burn::tensor::{Shape, Tensor};

pub use tune::{DwPath, interleaved_best};
pub use wgsl::AdamWHyper;

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
