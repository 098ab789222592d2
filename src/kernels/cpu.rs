//! The CPU (flex) side of the masked-gradient extension, in backend tensor ops.

use burn::backend::ops::{FloatTensorOps, IntTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Flex, TensorMetadata};
use burn::tensor::TensorData;

use super::{DwPath, MaskedGradOps};

impl MaskedGradOps for Flex {
    /// The CPU has one path: gather dY's selected columns, then matmul.
    fn masked_dw(dy: FloatTensor<Self>, x: FloatTensor<Self>, rows: Vec<u32>, _path: DwPath) -> FloatTensor<Self> {
        let device = dy.device();
        let n = rows.len();
        let idx = Self::int_from_data(TensorData::new(rows.into_iter().map(i64::from).collect::<Vec<_>>(), [n]), &device);
        let dy_rows = Self::float_select(dy, 1, idx);
        Self::float_matmul(Self::float_transpose(dy_rows), x)
    }

    fn masked_linear(x: FloatTensor<Self>, w: FloatTensor<Self>, _w_rows: FloatTensor<Self>, _rows: Vec<u32>) -> FloatTensor<Self> {
        Self::float_matmul(x, Self::float_transpose(w))
    }
}
