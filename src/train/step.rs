//! One forward/backward pass over a batch with a chosen set of trainable tensors.

use std::collections::BTreeMap;

use burn::tensor::Tensor;

use super::batch::DeviceBatch;
use crate::model::{Llama, Parameters, loss::causal_lm_loss, params::with_trainable};

pub struct Pass {
    pub loss: f64,
    /// Flattened gradients of exactly the trainable tensors.
    pub grads: BTreeMap<String, Tensor<1>>,
}

/// Loss on `batch`, and the gradients of the tensors `trainable` names. Frozen tensors stay plain
/// tensors, so autodiff neither records nor differentiates anything below the deepest trainable one.
pub fn forward_backward(model: &Llama, trainable: &dyn Fn(&str) -> bool, batch: &DeviceBatch) -> Pass {
    let model = with_trainable(model, trainable);
    let logits = model.forward(batch.ids.clone(), Some(&batch.mask), None);
    let (loss, _) = causal_lm_loss(logits, &batch.labels);
    let mut grads = BTreeMap::new();
    if loss.is_tracked() {
        let g = loss.backward();
        model.visit(&mut |name, p| {
            if let Some(t) = p.grad_flat(&g) {
                grads.insert(name.to_string(), t);
            }
        });
    }
    let loss: f32 = loss.inner().into_scalar();
    Pass { loss: loss as f64, grads }
}

/// Scales gradients so their global L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(grads: &mut BTreeMap<String, Tensor<1>>, max_norm: f64) -> f64 {
    let sq: f64 = grads.values().map(|g| g.clone().square().sum().into_scalar::<f32>() as f64).sum();
    let norm = sq.sqrt();
    if norm > max_norm && norm > 0.0 {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = g.clone().mul_scalar(scale);
        }
    }
    norm
}
