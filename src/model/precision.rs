//! How frozen weights are stored. A run trains a few tensors and only reads the others: those need
//! no f32 copy. Frozen weight matrices (linear layers, embedding tables, the LM head) are kept in
//! f16 or bf16 and converted block by block inside their products (`kernels::frozen`); trained
//! tensors, vectors (norms, biases) and adapters stay f32, with f32 AdamW state.
//!
//! A tensor joining the selection is promoted to f32 from its stored values, exact whenever the
//! storage holds the file's values (an f16 GGUF or a bf16 checkpoint in the same type). One leaving
//! it is demoted only if it never trained: a trained tensor keeps its f32 weights (and the
//! optimizer its moments), since rounding would erase its updates (bf16's step near a weight of
//! 0.02 is 1.2e-4, six updates at lr 2e-5). `train::trainer::store_for_selection` applies this.

use burn::tensor::{DType, Device};
use serde::{Deserialize, Serialize};

use super::params::{ParamMut, Parameters};

/// The `frozen_precision` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FrozenPrecision {
    /// Every weight in f32 (4 bytes per parameter).
    #[default]
    F32,
    /// Frozen weights in IEEE half precision (2 bytes; 11-bit significand, range +-65504).
    F16,
    /// Frozen weights in bfloat16 (2 bytes; 8-bit significand, f32's range): most HF checkpoints'
    /// own type. Devices without bf16 (wgpu) store f16 instead.
    Bf16,
}

impl FrozenPrecision {
    pub const ALL: [Self; 3] = [Self::F32, Self::F16, Self::Bf16];

    /// The name in config files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
        }
    }

    /// Bytes per frozen weight element, as [`FrozenPrecision::storage`] stores it where the device
    /// computes in the type asked for (for planning before a device is open).
    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 => 2,
        }
    }

    /// The setting as `device` carries it out: [`FrozenPrecision::F32`] where [`storage`] falls
    /// back to f32 (for estimates made once the device is known).
    ///
    /// [`storage`]: FrozenPrecision::storage
    pub fn on(self, device: &Device) -> Self {
        if self.storage(device) == DType::F32 { Self::F32 } else { self }
    }

    /// The type frozen matrices take on `device`: the one asked for where the device computes in
    /// it, f16 for bf16 where it only has f16 (wgpu), f32 where it has neither (a wgpu adapter
    /// without shader-f16).
    pub fn storage(self, device: &Device) -> DType {
        let wanted = match self {
            Self::F32 => return DType::F32,
            Self::F16 => [DType::F16, DType::F16],
            Self::Bf16 => [DType::BF16, DType::F16],
        };
        wanted.into_iter().find(|&d| device.supports_dtype(d)).unwrap_or(DType::F32)
    }
}

/// Stores `model`'s weight matrices in `frozen` (a float type) unless `trained(name)`, those in
/// f32: promotes the tensors that join the training set and demotes those that leave it. Vectors
/// are left in f32 (they are small, and norms are where low precision hurts).
pub fn store_frozen<M: Parameters>(model: &mut M, frozen: DType, trained: &dyn Fn(&str) -> bool) {
    model.visit_mut(&mut |name, p| {
        if let ParamMut::Matrix(w) = p {
            let dtype = if trained(name) { DType::F32 } else { frozen };
            if w.dtype() != dtype {
                *w = w.clone().cast(dtype);
            }
        }
    });
}

/// Bytes `model`'s parameters take as stored (a mix of f32 and low-precision tensors).
pub fn stored_bytes<M: Parameters>(model: &M) -> usize {
    let mut total = 0;
    model.visit(&mut |_, p| total += p.numel() * p.dtype().size());
    total
}
