//! Linear layers over frozen weights kept in a lower precision (f16, bf16) or in a GGUF file's
//! block quantization (Q8_0, Q4_0, Q4_1, Q4_K, Q6_K): `x W^T` and its input gradient `dY W` in f32, the
//! weight converted to f32 a block of rows at a time inside the op, so no f32 copy of a frozen
//! matrix outlives the product, and autodiff keeps only the stored weight (which the model holds
//! anyway) for the backward pass. The weight gets no gradient: a tensor that trains is promoted to
//! f32 first (`model::precision`).

use burn::backend::Backend;
use burn::backend::backend_extension;
use burn::backend::tensor::{FloatTensor, IntTensor};
use burn::tensor::{DType, Int, Shape, Tensor};

use crate::io::gguf::GgmlType;

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

    /// `x W^T` for `x [n, format.cols]` in f32 and `W` held as `blocks`, the bytes of a GGUF
    /// matrix in `format` packed into little-endian u32 words; `[n, format.rows]` f32.
    /// Differentiable in `x` only.
    #[fusion(dtype = x, shape = Shape::new([x[0], format.rows]))]
    fn quantized_linear(x: FloatTensor<Self>, blocks: IntTensor<Self>, format: QuantFormat) -> FloatTensor<Self>;

    /// `dy W` for `dy [n, format.rows]`: the input gradient of
    /// [`FrozenLinearOps::quantized_linear`], `[n, format.cols]` f32.
    #[fusion(dtype = dy, shape = Shape::new([dy[0], format.cols]))]
    fn quantized_linear_dx(dy: FloatTensor<Self>, blocks: IntTensor<Self>, format: QuantFormat) -> FloatTensor<Self>;
}

/// A block-quantized `[rows, cols]` matrix as a GGUF file stores it: each row a run of `ty`'s
/// blocks, rows one after another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuantFormat {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
}

impl QuantFormat {
    /// The types the kernels decode: the ones Q8_0, Q4_0, Q4_1 and Q4_K_M files are made of.
    pub const TYPES: [GgmlType; 5] = [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4_K, GgmlType::Q6_K];

    /// The format of a `[rows, cols]` matrix of `ty`, if the kernels decode `ty`, it is not empty
    /// and a row is whole blocks (GGUF requires it).
    pub fn new(ty: GgmlType, rows: usize, cols: usize) -> Option<Self> {
        let whole_blocks = rows > 0 && cols > 0 && cols.is_multiple_of(ty.block_size());
        (Self::TYPES.contains(&ty) && whole_blocks).then_some(Self { ty, rows, cols })
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.cols / self.ty.block_size() * self.ty.type_size()
    }

    /// Bytes of the matrix.
    pub fn bytes(&self) -> usize {
        self.rows * self.row_bytes()
    }

    /// The u32 words holding [`QuantFormat::bytes`] (the last one zero-padded).
    pub fn words(&self) -> usize {
        self.bytes().div_ceil(4)
    }
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

/// `x W^T` for `W` stored as `blocks` in `format` (see [`FrozenLinearOps::quantized_linear`]).
pub fn quantized_linear(x: Tensor<2>, blocks: Tensor<1, Int>, format: QuantFormat) -> Tensor<2> {
    Tensor::from_dispatch(burn::backend::Dispatch::quantized_linear(x.into_dispatch(), blocks.into_dispatch(), format))
}

/// `dy W` for `W` stored as `blocks` in `format`.
pub fn quantized_linear_dx(dy: Tensor<2>, blocks: Tensor<1, Int>, format: QuantFormat) -> Tensor<2> {
    Tensor::from_dispatch(burn::backend::Dispatch::quantized_linear_dx(dy.into_dispatch(), blocks.into_dispatch(), format))
}

/// [`linear`] in plain tensor ops (the whole weight converted, then the matmul): what the kernels
/// are tested against.
pub fn linear_reference(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    x.matmul(w.cast(DType::F32).transpose())
}
