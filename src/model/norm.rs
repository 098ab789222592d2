//! The normalisations the architectures share: RMSNorm (Llama family) and LayerNorm (OPT, BLOOM),
//! over the last dimension, with HF parameter names (`{prefix}.weight`, `{prefix}.bias`).

use burn::tensor::Tensor;

use super::params::ParamMut;

#[derive(Clone, Debug)]
pub struct RmsNorm {
    /// The HF name prefix of `.weight`.
    pub name: String,
    pub weight: Tensor<1>,
    pub eps: f64,
}

impl RmsNorm {
    /// One fused kernel forward and one backward ([`crate::kernels::fused`]).
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        crate::kernels::rms_norm(x, self.weight.clone(), self.eps)
    }

    pub fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        f(&format!("{}.weight", self.name), ParamMut::Vector(&mut self.weight));
    }
}

/// `nn.LayerNorm`: weight and bias are absent without elementwise affine (OPT's
/// `layer_norm_elementwise_affine: false`).
#[derive(Clone, Debug)]
pub struct LayerNorm {
    /// The HF name prefix of `.weight` and `.bias`.
    pub name: String,
    pub weight: Option<Tensor<1>>,
    pub bias: Option<Tensor<1>>,
    pub eps: f64,
}

impl LayerNorm {
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

    pub fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        if let Some(w) = &mut self.weight {
            f(&format!("{}.weight", self.name), ParamMut::Vector(w));
        }
        if let Some(b) = &mut self.bias {
            f(&format!("{}.bias", self.name), ParamMut::Vector(b));
        }
    }
}
