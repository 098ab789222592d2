//! Reading an architecture's parameters by HF name from whatever holds them (safetensors, GGUF, a
//! random initialiser), shared by every architecture's `load`.

use burn::tensor::{Device, Tensor, TensorData};

use super::linear::Linear;
use crate::error::Result;

/// Supplies each parameter's values (f32, row-major, HF shape) by HF name; the loader validates
/// the shape it is asked for against its file.
pub type TensorSource<'a> = dyn FnMut(&str, &[usize]) -> Result<Vec<f32>> + 'a;

/// Reads parameters from a [`TensorSource`] onto a device; every architecture's `load` uses it.
pub(crate) struct Loader<'s, 'a> {
    source: &'s mut TensorSource<'a>,
    device: &'s Device,
}

impl<'s, 'a> Loader<'s, 'a> {
    pub(crate) fn new(source: &'s mut TensorSource<'a>, device: &'s Device) -> Self {
        Self { source, device }
    }

    pub(crate) fn matrix(&mut self, name: &str, shape: [usize; 2]) -> Result<Tensor<2>> {
        Ok(Tensor::from_data(TensorData::new((self.source)(name, &shape)?, shape), self.device))
    }

    pub(crate) fn vector(&mut self, name: &str, dim: usize) -> Result<Tensor<1>> {
        Ok(Tensor::from_data(TensorData::new((self.source)(name, &[dim])?, [dim]), self.device))
    }

    /// `{prefix}.weight` (`[d_out, d_in]`), then `{prefix}.bias` when `bias`.
    pub(crate) fn linear(&mut self, prefix: &str, d_out: usize, d_in: usize, bias: bool) -> Result<Linear> {
        let weight = self.matrix(&format!("{prefix}.weight"), [d_out, d_in])?;
        let bias = if bias { Some(self.vector(&format!("{prefix}.bias"), d_out)?) } else { None };
        Ok(Linear::new(weight, bias))
    }
}
