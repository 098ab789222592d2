//! AdamW (PyTorch semantics, as HF's Trainer uses) with state only for tensors that received a
//! gradient: frozen tensors cost no optimizer memory. State is plain tensors keyed by parameter
//! name, so it can be snapshotted (importance scoring) and checkpointed exactly.

use std::collections::BTreeMap;

use burn::tensor::DType::F32;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use burn::tensor::IndexingUpdateOp;

use crate::kernels::{AdamWHyper, adamw, masked_adamw, row_index, runs_wgsl};
use crate::model::{Model, ParamMut, Parameters, Weight};
use crate::profile::blocks::rows_state_name;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// The paper's (and HF's) defaults with weight decay 0.01.
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// Moments of one parameter, flattened to 1-D (for row-partial weights: of the trained rows).
#[derive(Clone, Debug)]
pub struct Moments {
    pub m: Tensor<1>,
    pub v: Tensor<1>,
    /// Updates this tensor has received (bias correction is per tensor, since selection changes).
    pub step: u64,
    /// For row-partial state: the rows it belongs to (a new row set starts fresh moments).
    pub rows: Option<Vec<u32>>,
}

#[derive(Clone, Debug)]
pub struct AdamW {
    pub config: AdamWConfig,
    pub state: BTreeMap<String, Moments>,
}

impl AdamW {
    pub fn new(config: AdamWConfig) -> Self {
        Self { config, state: BTreeMap::new() }
    }

    /// Bytes of optimizer state held (two f32 moments per trained element).
    pub fn state_bytes(&self) -> usize {
        self.state.values().map(|s| s.m.dims()[0] * 8).sum()
    }

    /// Applies one update with learning rate `lr` to every parameter that has a gradient in
    /// `grads` (flattened f32 tensors keyed by name), each gradient multiplied by `grad_scale`
    /// (clipping, accumulation) inside the fused kernel; the others are untouched. A weight stored
    /// in low precision (`model::precision`) is promoted to f32 by its update.
    pub fn step<M: Parameters>(&mut self, model: &mut M, grads: &BTreeMap<String, Tensor<1>>, lr: f64, grad_scale: f64) {
        let c = self.config;
        model.visit_mut(&mut |name, p| {
            let Some(g) = grads.get(name) else { return };
            let s = self.state.entry(name.to_string()).or_insert_with(|| Moments::fresh(g));
            s.step += 1;
            (s.m, s.v) = update(p, g.clone(), s.m.extract(), s.v.extract(), hyper(&c, lr, s.step, grad_scale));
        });
    }

    /// The update [`AdamW::step`] would make (scale 1), leaving the optimizer's state as it is:
    /// each tensor's new moments are dropped, and its gradient freed, as soon as its weights are
    /// written, so the update holds no state and no spent gradient for the whole model at once
    /// (importance scoring's step over every tensor).
    pub fn step_detached<M: Parameters>(&self, model: &mut M, mut grads: BTreeMap<String, Tensor<1>>, lr: f64) {
        let c = self.config;
        model.visit_mut(&mut |name, p| {
            let Some(g) = grads.remove(name) else { return };
            let s = self.state.get(name).cloned().unwrap_or_else(|| Moments::fresh(&g));
            update(p, g, s.m, s.v, hyper(&c, lr, s.step + 1, 1.0));
        });
    }
}

impl Moments {
    /// Zero moments for a tensor of `grad`'s size, before its first update.
    fn fresh(grad: &Tensor<1>) -> Self {
        let n = grad.dims()[0];
        Self { m: Tensor::zeros([n], &grad.device()), v: Tensor::zeros([n], &grad.device()), step: 0, rows: None }
    }
}

/// One parameter's fused AdamW update from moments `m`, `v` and flat gradient `g`: writes the new
/// weights (in f32: a weight stored in low precision, `model::precision`, is promoted by its
/// update) and returns the new moments.
fn update(p: ParamMut<'_>, g: Tensor<1>, m: Tensor<1>, v: Tensor<1>, hp: AdamWHyper) -> (Tensor<1>, Tensor<1>) {
    match p {
        ParamMut::Vector(w) => {
            let (new_w, m, v) = adamw(w.extract().cast(F32), g, m, v, hp);
            *w = new_w;
            (m, v)
        }
        ParamMut::Matrix(w) => {
            let (new_w, m, v) = matrix_update(w.extract(), g, m, v, hp);
            *w = new_w;
            (m, v)
        }
        ParamMut::Weight(w) => {
            let (new_w, m, v) = matrix_update(w.extract().into_float(), g, m, v, hp);
            *w = Weight::Float(new_w);
            (m, v)
        }
    }
}

/// [`update`] of a matrix, returned in f32.
fn matrix_update(w: Tensor<2>, g: Tensor<1>, m: Tensor<1>, v: Tensor<1>, hp: AdamWHyper) -> (Tensor<2>, Tensor<1>, Tensor<1>) {
    let dims = w.dims();
    let (new_w, m, v) = adamw(w.cast(F32).reshape([dims[0] * dims[1]]), g, m, v, hp);
    (new_w.reshape(dims), m, v)
}

/// Whether optimizer state keyed like [`AdamW::state`] (moments, or step counts in a checkpoint)
/// holds the tensor `name`, whole or by rows ([`rows_state_name`]): whether it has trained.
pub fn has_state<V>(state: &BTreeMap<String, V>, name: &str) -> bool {
    state.contains_key(name) || state.contains_key(&rows_state_name(name))
}

/// The kernels' settings for a tensor's `step`-th update (bias correction counts its own updates).
fn hyper(c: &AdamWConfig, lr: f64, step: u64, grad_scale: f64) -> AdamWHyper {
    AdamWHyper {
        lr: lr as f32,
        beta1: c.beta1 as f32,
        beta2: c.beta2 as f32,
        eps: c.eps as f32,
        weight_decay: c.weight_decay as f32,
        bias_correction1: (1.0 - c.beta1.powi(step as i32)) as f32,
        bias_correction2: (1.0 - c.beta2.powi(step as i32)) as f32,
        grad_scale: grad_scale as f32,
    }
}

impl AdamW {
    /// Updates only the given output rows of weights, from compact `[rows, d_in]` gradients: the
    /// fused WGSL kernel on wgpu, gathered tensor ops on the CPU. State is kept under `name#rows` ([`rows_state_name`]).
    pub fn step_rows(
        &mut self,
        model: &mut Model,
        grads: &BTreeMap<String, Tensor<2>>,
        rows: &BTreeMap<String, Vec<u32>>,
        lr: f64,
        grad_scale: f64,
    ) {
        let c = self.config;
        model.visit_mut(&mut |name, p| {
            let (Some(g), Some(r), ParamMut::Weight(w)) = (grads.get(name), rows.get(name), p) else { return };
            let [n_rows, d_in] = g.dims();
            let key = rows_state_name(name);
            let fresh = self.state.get(&key).is_none_or(|s| s.rows.as_ref() != Some(r));
            if fresh {
                let zeros = Tensor::zeros([n_rows * d_in], &g.device());
                self.state.insert(key.clone(), Moments { m: zeros.clone(), v: zeros, step: 0, rows: Some(r.clone()) });
            }
            let s = self.state.get_mut(&key).expect("inserted above");
            s.step += 1;
            let hp = hyper(&c, lr, s.step, grad_scale);
            let (m, v) = (s.m.extract().reshape([n_rows, d_in]), s.v.extract().reshape([n_rows, d_in]));
            // Promoted to f32 by its update, as in `update`.
            let w_f32 = w.extract().into_float().cast(F32);
            let (new_w, new_m, new_v) = if runs_wgsl(&g.device()) {
                masked_adamw(w_f32, g.clone(), m, v, r, hp)
            } else {
                adamw_rows_reference(w_f32, g.clone(), m, v, r, hp)
            };
            *w = Weight::Float(new_w);
            s.m = new_m.reshape([n_rows * d_in]);
            s.v = new_v.reshape([n_rows * d_in]);
        });
    }
}

/// The CPU path of the masked update: gather the rows, AdamW, scatter the change back.
fn adamw_rows_reference(
    w: Tensor<2>,
    g: Tensor<2>,
    m: Tensor<2>,
    v: Tensor<2>,
    rows: &[u32],
    hp: AdamWHyper,
) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let idx = row_index(rows, &w.device());
    let old = w.clone().select(0, idx.clone());
    let g = g.mul_scalar(hp.grad_scale);
    let m = m.mul_scalar(hp.beta1) + g.clone().mul_scalar(1.0 - hp.beta1);
    let v = v.mul_scalar(hp.beta2) + g.square().mul_scalar(1.0 - hp.beta2);
    let update = m.clone().div_scalar(hp.bias_correction1) / v.clone().div_scalar(hp.bias_correction2).sqrt().add_scalar(hp.eps);
    let new = old.clone().mul_scalar(1.0 - hp.lr * hp.weight_decay) - update.mul_scalar(hp.lr);
    (w.select_assign(0, idx, new - old, IndexingUpdateOp::Add), m, v)
}

/// Linear warmup from 0 then linear decay to 0 at `total_steps` (HF's `linear` schedule).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinearSchedule {
    pub peak_lr: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl LinearSchedule {
    /// Learning rate for the update that follows `step` completed updates.
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let remaining = self.total_steps.saturating_sub(step) as f64;
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        self.peak_lr * (remaining / span).max(0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let s = LinearSchedule { peak_lr: 1.0, warmup_steps: 2, total_steps: 10 };
        assert_eq!(s.lr(0), 0.0);
        assert_eq!(s.lr(1), 0.5);
        assert_eq!(s.lr(2), 1.0);
        assert_eq!(s.lr(6), 0.5);
        assert_eq!(s.lr(10), 0.0);
    }
}
