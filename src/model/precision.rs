//! How frozen weights are stored. A run trains a few tensors and only reads the others: those need
//! no f32 copy. Frozen weight matrices (linear layers, embedding tables, the LM head) are kept in
//! f16 or bf16, or, under `source`, linear layers keep a GGUF file's block quantization (Q8_0,
//! Q4_0, Q4_1, Q4_K, Q6_K: `model::weight`) and the rest f16; the kernels convert them block by block
//! inside their products (`kernels::frozen`). Trained tensors, vectors (norms, biases) and
//! adapters stay f32, with f32 AdamW state.
//!
//! A tensor joining the selection is promoted to f32 from its stored values, exact whenever the
//! storage holds the file's values (quantized blocks, an f16 GGUF or a bf16 checkpoint in the same
//! type). One leaving it is demoted only if it never trained: a trained tensor keeps its f32
//! weights (and the optimizer its moments), since rounding would erase its updates (bf16's step
//! near a weight of 0.02 is 1.2e-4, six updates at lr 2e-5). A quantized one returns to its file's
//! blocks, which the run keeps ([`FrozenStore`]). `train::trainer::store_for_selection` applies this.

use std::collections::BTreeMap;

use burn::tensor::{DType, Device};
use serde::{Deserialize, Serialize};

use super::params::{ParamMut, Parameters};
use super::weight::{QuantMatrix, Weight};

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
    /// Linear layers kept in the GGUF file's quantization where it is Q8_0, Q4_0, Q4_1, Q4_K or
    /// Q6_K (1.06, 0.56, 0.63, 0.56 and 0.82 bytes per weight); every other frozen matrix, and every one of
    /// a file that is not a GGUF, as [`FrozenPrecision::F16`].
    Source,
}

impl FrozenPrecision {
    pub const ALL: [Self; 4] = [Self::F32, Self::F16, Self::Bf16, Self::Source];

    /// The name in config files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::Source => "source",
        }
    }

    /// Bytes per frozen weight element, as [`FrozenPrecision::storage`] stores it where the device
    /// computes in the type asked for (for planning before a device is open; `source` counts its
    /// float fallback, an upper bound for the quantized matrices).
    pub fn bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::Bf16 | Self::Source => 2,
        }
    }

    /// The setting as `device` carries it out: [`FrozenPrecision::F32`] where [`storage`] falls
    /// back to f32 (for estimates made once the device is known).
    ///
    /// [`storage`]: FrozenPrecision::storage
    pub fn on(self, device: &Device) -> Self {
        if self.storage(device) == DType::F32 { Self::F32 } else { self }
    }

    /// The float type frozen matrices take on `device` (under `source`, those not kept quantized):
    /// the one asked for where the device computes in it, f16 for bf16 where it only has f16
    /// (wgpu), f32 where it has neither (a wgpu adapter without shader-f16).
    pub fn storage(self, device: &Device) -> DType {
        let wanted = match self {
            Self::F32 => return DType::F32,
            Self::F16 | Self::Source => [DType::F16, DType::F16],
            Self::Bf16 => [DType::BF16, DType::F16],
        };
        wanted.into_iter().find(|&d| device.supports_dtype(d)).unwrap_or(DType::F32)
    }
}

/// How a run stores its frozen matrices.
#[derive(Clone, Debug)]
pub struct FrozenStore {
    /// The float type of those not kept quantized.
    pub dtype: DType,
    /// Under `source`: the file's blocks of each linear weight the kernels decode, by name. The run
    /// holds them throughout (handles the model shares while the tensor is frozen), so a tensor
    /// promoted for a selection it leaves untrained returns to exactly its file's values.
    pub quantized: BTreeMap<String, QuantMatrix>,
}

impl FrozenStore {
    /// Frozen matrices in `dtype`, none quantized.
    pub fn float(dtype: DType) -> Self {
        Self { dtype, quantized: BTreeMap::new() }
    }
}

/// Stores `model`'s weight matrices as `store` says unless `trained(name)`, those in f32: promotes
/// the tensors that join the training set and demotes those that leave it. Vectors are left in f32
/// (they are small, and norms are where low precision hurts).
pub fn store_frozen<M: Parameters>(model: &mut M, store: &FrozenStore, trained: &dyn Fn(&str) -> bool) {
    model.visit_mut(&mut |name, p| {
        let trained = trained(name);
        let dtype = if trained { DType::F32 } else { store.dtype };
        match p {
            ParamMut::Vector(_) => {}
            ParamMut::Matrix(w) => {
                if w.dtype() != dtype {
                    *w = w.clone().cast(dtype);
                }
            }
            ParamMut::Weight(w) => match (store.quantized.get(name), &*w) {
                (Some(q), _) if !trained => *w = Weight::Quantized(q.clone()),
                (_, Weight::Float(t)) if t.dtype() == dtype => {}
                _ => *w = Weight::Float(w.to_float().cast(dtype)),
            },
        }
    });
}

/// Bytes `model`'s parameters take as stored (a mix of f32 and low-precision tensors).
pub fn stored_bytes<M: Parameters>(model: &M) -> usize {
    let mut total = 0;
    model.visit(&mut |_, p| total += p.bytes());
    total
}
