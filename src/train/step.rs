//! One forward/backward pass over a batch with a chosen set of trainable tensors.

use std::collections::BTreeMap;

use burn::tensor::Tensor;

use super::batch::DeviceBatch;
use crate::error::Result;
use crate::model::{Linears, Model, Parameters, params::with_trainable};

pub struct Pass {
    pub loss: f64,
    /// Flattened gradients of exactly the trainable tensors.
    pub grads: BTreeMap<String, Tensor<1>>,
    /// Compact `[rows, d_in]` gradients of partially trained weights, by weight name.
    pub row_grads: BTreeMap<String, Tensor<2>>,
}

/// Loss on `batch`, and the gradients of the tensors `trainable` names. Frozen tensors stay plain
/// tensors, so autodiff neither records nor differentiates anything below the deepest trainable one.
/// An error when `batch` was laid out for another kind of model.
pub fn forward_backward(model: &Model, trainable: &dyn Fn(&str) -> bool, batch: &DeviceBatch) -> Result<Pass> {
    forward_backward_rows(model, trainable, &BTreeMap::new(), batch)
}

/// As [`forward_backward`], with some weights trained on the listed output rows only.
pub fn forward_backward_rows(
    model: &Model,
    trainable: &dyn Fn(&str) -> bool,
    rows: &BTreeMap<String, Vec<u32>>,
    batch: &DeviceBatch,
) -> Result<Pass> {
    // The given model tracks nothing (row blocks are tracked leaves once split out): a frozen
    // prompt prefix runs through it.
    let frozen = model;
    let model = with_trainable(&frozen.with_partial_rows(rows), trainable);
    let (loss, _) = match batch.frozen_prefix {
        0 => model.train_loss(&batch.input, &batch.labels)?,
        prefix => model.train_loss_after_prefix(frozen, &batch.input, &batch.labels, prefix)?,
    };
    let mut grads = BTreeMap::new();
    let mut row_grads = BTreeMap::new();
    if loss.is_tracked() {
        let g = loss.backward();
        model.visit(&mut |name, p| {
            if let Some(t) = p.grad_flat(&g) {
                grads.insert(name.to_string(), t);
            }
        });
        for (name, partial) in model.partial_leaves() {
            if let Some(t) = partial.leaf.grad(&g) {
                row_grads.insert(name, t);
            }
        }
    }
    let loss: f32 = loss.inner().into_scalar();
    Ok(Pass { loss: loss as f64, grads, row_grads })
}

/// The global L2 norm of whole-tensor and row-block gradients together (what clipping bounds),
/// read back once rather than once per tensor.
pub fn grad_norm(grads: &BTreeMap<String, Tensor<1>>, row_grads: &BTreeMap<String, Tensor<2>>) -> f64 {
    let squares = grads.values().map(|g| g.clone().square().sum()).chain(row_grads.values().map(|g| g.clone().square().sum()));
    squares.reduce(|a, b| a + b).map_or(0.0, |sq| (sq.into_scalar::<f32>() as f64).sqrt())
}
