//! The linear layer every architecture shares, and what works on an architecture's list of them:
//! LoRA adapters, partially trained rows (block granularity) and merging for export.

use std::collections::BTreeMap;

use burn::tensor::Tensor;

use super::lora::{LoraAdapter, LoraConfig};
use super::params::{ModuleMut, ParamMut, Parameters};
use super::weight::Weight;
use crate::kernels::{frozen, masked_linear, row_index};

#[derive(Clone, Debug)]
pub struct Linear {
    /// The HF name prefix (`model.layers.0.self_attn.q_proj`) of `.weight` and `.bias`.
    pub name: String,
    /// `[out, in]`, as in HF checkpoints.
    pub weight: Weight,
    pub bias: Option<Tensor<1>>,
    pub lora: Option<LoraAdapter>,
    /// Set while only some output rows of `weight` are trained (block granularity).
    pub partial: Option<PartialRows>,
}

/// The trained rows of a partially selected weight: a compact leaf equal to `weight[rows]` that
/// receives the gradient of those rows alone (see `kernels::masked_linear`).
#[derive(Clone, Debug)]
pub struct PartialRows {
    pub rows: Vec<u32>,
    pub leaf: Tensor<2>,
}

impl Linear {
    pub fn new(name: String, weight: Weight, bias: Option<Tensor<1>>) -> Self {
        Self { name, weight, bias, lora: None, partial: None }
    }

    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, s, d_in] = x.dims();
        let d_out = self.weight.dims()[0];
        let x = x.reshape([b * s, d_in]);
        let mut y = match &self.partial {
            // A partially trained weight is f32 (`model::precision` promotes it first).
            Some(p) => masked_linear(x.clone(), self.weight.to_float(), p.leaf.clone(), &p.rows),
            None => self.weight.linear(x.clone()),
        };
        if let Some(lora) = &self.lora {
            y = y + lora.forward(x);
        }
        let y = match &self.bias {
            Some(bias) => y + bias.clone().unsqueeze::<2>(),
            None => y,
        };
        y.reshape([b, s, d_out])
    }

    /// Visits `{name}.weight`, the bias and the adapter matrices under their HF/PEFT names.
    pub fn visit_mut(&mut self, f: &mut dyn FnMut(&str, ParamMut<'_>)) {
        let name = &self.name;
        f(&format!("{name}.weight"), ParamMut::Weight(&mut self.weight));
        if let Some(bias) = &mut self.bias {
            f(&format!("{name}.bias"), ParamMut::Vector(bias));
        }
        if let Some(lora) = &mut self.lora {
            f(&format!("{name}.lora_A.weight"), ParamMut::Matrix(&mut lora.a));
            f(&format!("{name}.lora_B.weight"), ParamMut::Matrix(&mut lora.b));
        }
    }
}

/// What works on a model's linear layers, found by its one traversal: LoRA, partially trained
/// rows and merging are defined once for every architecture.
pub trait Linears: Parameters {
    /// The linear layers in execution order.
    fn linears_mut(&mut self) -> Vec<&mut Linear> {
        let modules = self.modules_mut();
        modules.into_iter().filter_map(|m| if let ModuleMut::Linear(l) = m { Some(l) } else { None }).collect()
    }

    /// [`Linears::linears_mut`] as copies holding handles to the same tensors: for reading (names,
    /// shapes, partial rows); changing a copy changes nothing in the model.
    fn linears(&self) -> Vec<Linear> {
        self.clone().linears_mut().into_iter().map(|l| l.clone()).collect()
    }

    /// Attaches fresh LoRA adapters to the target linears; returns the adapter parameter names.
    fn attach_lora(&mut self, config: &LoraConfig) -> Vec<String> {
        let mut names = Vec::new();
        for lin in self.linears_mut() {
            if config.targets.iter().any(|t| lin.name.ends_with(&format!(".{t}"))) {
                let [d_out, d_in] = lin.weight.dims();
                lin.lora = Some(LoraAdapter::new(d_in, d_out, config, &lin.weight.device()));
                names.push(format!("{}.lora_A.weight", lin.name));
                names.push(format!("{}.lora_B.weight", lin.name));
            }
        }
        names
    }

    /// A copy whose listed weights train only the given output rows (compact autodiff leaves).
    fn with_partial_rows(&self, rows: &BTreeMap<String, Vec<u32>>) -> Self {
        let mut out = self.clone();
        for lin in out.linears_mut() {
            let Some(r) = rows.get(&format!("{}.weight", lin.name)) else { continue };
            let idx = row_index(r, &lin.weight.device());
            let leaf = lin.weight.to_float().select(0, idx).autodiff().require_grad();
            lin.partial = Some(PartialRows { rows: r.clone(), leaf });
        }
        out
    }

    /// The compact leaves of partially trained weights, keyed by the weight's name.
    fn partial_leaves(&self) -> Vec<(String, PartialRows)> {
        self.linears().into_iter().filter_map(|lin| Some((format!("{}.weight", lin.name), lin.partial?))).collect()
    }

    /// A copy with every adapter merged into its weight (`W + s B A`) and removed: a plain model
    /// that HF transformers loads.
    fn merged(&self) -> Self {
        let mut out = self.clone();
        for lin in out.linears_mut() {
            if let Some(lora) = lin.lora.take() {
                lin.weight = Weight::Float(lin.weight.to_float().cast(burn::tensor::DType::F32) + lora.delta());
            }
        }
        out
    }
}

impl<M: Parameters> Linears for M {}

/// Logits `[B, S, V]` of hidden states `[B, S, d]` through an LM head `[V, d]` (no bias in any
/// supported architecture), stored in any float type.
pub fn vocab_logits(x: Tensor<3>, head: Tensor<2>) -> Tensor<3> {
    let [b, s, d] = x.dims();
    let vocab = head.dims()[0];
    frozen::linear(x.reshape([b * s, d]), head).reshape([b, s, vocab])
}
