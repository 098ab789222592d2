//! A linear layer's weight matrix as stored: a float tensor, or, frozen under
//! `frozen_precision = source`, the blocks of a GGUF file's quantization (Q8_0, Q4_0, Q4_1, Q4_K,
//! Q6_K: `kernels::frozen::QuantFormat::TYPES`) that the frozen kernels decode a block of rows at a time inside their products.

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::kernels::frozen::{self, QuantFormat};

/// A linear layer's `[out, in]` weight.
#[derive(Clone, Debug)]
pub enum Weight {
    /// In a float type: f32 while trained; f32, f16 or bf16 while frozen (`model::precision`).
    Float(Tensor<2>),
    /// Frozen in its file's block quantization.
    Quantized(QuantMatrix),
}

/// A frozen matrix kept as its GGUF file's blocks, on the device.
#[derive(Clone, Debug)]
pub struct QuantMatrix {
    pub format: QuantFormat,
    /// The file's bytes of the matrix (rows in HF order) packed into little-endian u32 words.
    pub blocks: Tensor<1, Int>,
}

impl QuantMatrix {
    /// The matrix `bytes` holds in `format` (exactly [`QuantFormat::bytes`] of them), on `device`.
    pub fn new(format: QuantFormat, bytes: &[u8], device: &Device) -> Self {
        assert_eq!(bytes.len(), format.bytes(), "{format:?} takes {} bytes", format.bytes());
        let mut words = vec![0u32; format.words()];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        let blocks = Tensor::from_data(TensorData::new(words, [format.words()]), (device, DType::U32));
        Self { format, blocks }
    }

    pub fn dims(&self) -> [usize; 2] {
        [self.format.rows, self.format.cols]
    }

    /// The values in f32, row-major (decoded on the host).
    pub fn to_vec(&self) -> Vec<f32> {
        let words = self.blocks.clone().into_data().try_into_vec::<u32>().expect("quantized blocks are u32 words");
        let bytes: &[u8] = bytemuck::cast_slice(&words);
        let mut values = vec![0f32; self.format.rows * self.format.cols];
        crate::io::gguf::dequantize(self.format.ty, &bytes[..self.format.bytes()], &mut values);
        values
    }

    /// The values as an f32 tensor: a promotion's exact starting point.
    pub fn dequantized(&self) -> Tensor<2> {
        Tensor::from_data(TensorData::new(self.to_vec(), self.dims()), &self.blocks.device())
    }
}

impl Weight {
    /// Takes the weight out, leaving an empty float placeholder (so an update can write into its
    /// buffer in place: `Tensor::extract`).
    pub fn extract(&mut self) -> Self {
        let empty = Self::Float(Tensor::empty([0, 0], &self.device()));
        std::mem::replace(self, empty)
    }

    pub fn dims(&self) -> [usize; 2] {
        match self {
            Self::Float(t) => t.dims(),
            Self::Quantized(q) => q.dims(),
        }
    }

    pub fn device(&self) -> Device {
        match self {
            Self::Float(t) => t.device(),
            Self::Quantized(q) => q.blocks.device(),
        }
    }

    /// Bytes as stored.
    pub fn bytes(&self) -> usize {
        match self {
            Self::Float(t) => t.dims().iter().product::<usize>() * t.dtype().size(),
            Self::Quantized(q) => q.format.bytes(),
        }
    }

    /// The weight as a float tensor: the stored one, or the quantized values decoded to f32.
    pub fn to_float(&self) -> Tensor<2> {
        self.clone().into_float()
    }

    /// [`Weight::to_float`], by value.
    pub fn into_float(self) -> Tensor<2> {
        match self {
            Self::Float(t) => t,
            Self::Quantized(q) => q.dequantized(),
        }
    }

    /// `x W^T` for `x [n, in]`, in f32 whatever the storage (`kernels::frozen`).
    pub fn linear(&self, x: Tensor<2>) -> Tensor<2> {
        match self {
            Self::Float(t) => frozen::linear(x, t.clone()),
            Self::Quantized(q) => frozen::quantized_linear(x, q.blocks.clone(), q.format),
        }
    }
}
