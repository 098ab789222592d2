//! The CPU (flex) side of the masked-gradient extension, in backend tensor ops.

use burn::backend::Flex;
use burn::backend::tensor::FloatTensor;

use super::{DwPath, MaskedGradOps, dense_linear, gather_matmul_dw};

impl MaskedGradOps for Flex {
    /// The CPU has one path: gather dY's selected columns, then matmul.
    fn masked_dw(dy: FloatTensor<Self>, x: FloatTensor<Self>, rows: Vec<u32>, _path: DwPath) -> FloatTensor<Self> {
        gather_matmul_dw::<Self>(dy, x, rows)
    }

    fn masked_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, _w_rows: FloatTensor<Self>, _rows: Vec<u32>) -> FloatTensor<Self> {
        dense_linear::<Self>(x, w)
    }
}
