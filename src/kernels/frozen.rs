//! Linear layers over frozen weights kept in a lower precision (f16, bf16): `x W^T` and its input
//! gradient `dY W` in f32, the weight converted to f32 a block of rows at a time inside the op, so
//! no f32 copy of a frozen matrix outlives the product, and autodiff keeps only the low-precision
//! weight (which the model holds anyway) for the backward pass. The weight gets no gradient: a
//! tensor that trains is promoted to f32 first (`model::precision`).

use burn::backend::Backend;
use burn::backend::backend_extension;
use burn::backend::tensor::FloatTensor;
use burn::tensor::{DType, Shape, Tensor};

#[backend_extension(Cube, Flex, Fusion, Autodiff)]
pub trait FrozenLinearOps: Backend {
    /// `x W^T` for `x [n, d_in]` in f32 and `w [d_out, d_in]` in any float type; `[n, d_out]` f32.
    /// Differentiable in `x` only.
    #[fusion(dtype = x, shape = Shape::new([x[0], w[0]]))]
    fn frozen_linear(x: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;

    /// `dy W` for `dy [n, d_out]` in f32: the input gradient of [`FrozenLinearOps::frozen_linear`],
    /// `[n, d_in]` f32.
    #[fusion(dtype = dy, shape = Shape::new([dy[0], w[1]]))]
    fn frozen_linear_dx(dy: FloatTensor<Self>, w: FloatTensor<Self>) -> FloatTensor<Self>;
}

/// `(start, rows)` of each block of rows of a `[d_out, d_in]` weight converted to f32 at a time,
/// in order: blocks of at most `elements` (at least one row each).
pub(super) fn row_blocks(d_out: usize, d_in: usize, elements: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = (elements / d_in.max(1)).max(1);
    (0..d_out).step_by(step).map(move |start| (start, step.min(d_out - start)))
}

/// `x W^T` whatever `w`'s float type: a plain matmul for f32 weights, [`FrozenLinearOps`] for the
/// others. A low-precision weight that is tracked (trained) is converted whole, so it gets its
/// gradient; the model never trains one (see the module docs).
pub fn linear(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    if w.dtype() == DType::F32 || w.is_tracked() {
        return linear_reference(x, w);
    }
    Tensor::from_dispatch(burn::backend::Dispatch::frozen_linear(x.into_dispatch(), w.into_dispatch()))
}

/// `dy W` whatever `w`'s float type (an input gradient computed by hand, e.g. by the chunked loss).
pub fn linear_dx(dy: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    if w.dtype() == DType::F32 {
        return dy.matmul(w);
    }
    Tensor::from_dispatch(burn::backend::Dispatch::frozen_linear_dx(dy.into_dispatch(), w.into_dispatch()))
}

/// [`linear`] in plain tensor ops (the whole weight converted, then the matmul): what the kernels
/// are tested against.
pub fn linear_reference(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    x.matmul(w.cast(DType::F32).transpose())
}
