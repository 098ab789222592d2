//! The normalisations the architectures share: RMSNorm (Llama family) and LayerNorm (OPT, BLOOM),
//! over the last dimension, with HF parameter names (`{prefix}.weight`, `{prefix}.bias`).

use burn::tensor::Tensor;

use super::loader::Loader;
use super::params::{ParamMut, ParamRef};
use crate::error::Result;

#[derive(Clone, Debug)]
pub struct RmsNorm {
    pub weight: Tensor<1>,
    pub eps: f64,
}

impl RmsNorm {
    pub(crate) fn load(l: &mut Loader<'_, '_>, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: l.vector(&format!("{prefix}.weight"), dim)?, eps })
    }

    /// One fused kernel forward and one backward ([`crate::kernels::fused`]).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        crate::kernels::rms_norm(x, self.weight.clone(), self.eps)
    }

    pub fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_>), prefix: &str) {
        f(&format!("{prefix}.weight"), ParamRef::Vector(&self.weight));
    }

    pub fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_>), prefix: &str) {
        f(&format!("{prefix}.weight"), ParamMut::Vector(&mut self.weight));
    }
}

/// `nn.LayerNorm`: weight and bias are absent without elementwise affine (OPT's
/// `layer_norm_elementwise_affine: false`).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub weight: Option<Tensor<1>>,
    pub bias: Option<Tensor<1>>,
    pub eps: f64,
}

impl LayerNorm {
    /// Reads `{prefix}.weight` then `{prefix}.bias` when `affine`, nothing otherwise.
    pub(crate) fn load(l: &mut Loader<'_, '_>, prefix: &str, dim: usize, affine: bool, eps: f64) -> Result<Self> {
        let (weight, bias) = if affine {
            (Some(l.vector(&format!("{prefix}.weight"), dim)?), Some(l.vector(&format!("{prefix}.bias"), dim)?))
        } else {
            (None, None)
        };
        Ok(Self { weight, bias, eps })
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let centered = x.clone() - x.mean_dim(2);
        let inv_std = centered.clone().square().mean_dim(2).add_scalar(self.eps).sqrt().recip();
        let mut y = centered * inv_std;
        if let Some(w) = &self.weight {
            y = y * w.clone().unsqueeze::<3>();
        }
        if let Some(b) = &self.bias {
            y = y + b.clone().unsqueeze::<3>();
        }
        y
    }

    pub fn visit(&self, f: &mut dyn FnMut(&str, ParamRef<'_>), prefix: &str) {
        if let Some(w) = &self.weight {
            f(&format!("{prefix}.weight"), ParamRef::Vector(w));
        }
        if let Some(b) = &self.bias {
            f(&format!("{prefix}.bias"), ParamRef::Vector(b));
        }
    }

    pub fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_>), prefix: &str) {
        if let Some(w) = &mut self.weight {
            f(&format!("{prefix}.weight"), ParamMut::Vector(w));
        }
        if let Some(b) = &mut self.bias {
            f(&format!("{prefix}.bias"), ParamMut::Vector(b));
        }
    }
}
