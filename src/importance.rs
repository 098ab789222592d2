//! Tensor importance (spec section 5): I_k = -sum(g_k(w1) * (w1_k - w0_k)), where w1 is one real
//! AdamW step from w0 on a batch and g(w1) the gradient at w1 on the same batch; normalised by
//! max |I_k|. The run's weights and optimizer state are never touched: the step is taken on
//! copies (tensors are immutable handles), so nothing needs restoring and nothing leaks.

use std::collections::BTreeMap;

use crate::error::Result;
use crate::model::{Model, Parameters};
use crate::train::batch::DeviceBatch;
use crate::train::optim::AdamW;
use crate::train::step::forward_backward;

#[derive(Debug, Clone, PartialEq)]
pub struct Importance {
    /// Normalised importance per scored tensor, in [-1, 1].
    pub scores: BTreeMap<String, f64>,
    /// Unnormalised importance per scored tensor.
    pub raw: BTreeMap<String, f64>,
    /// Unnormalised importance per output row of each scored matrix (for block granularity).
    pub rows: BTreeMap<String, Vec<f64>>,
    pub loss: f64,
}

/// Scores the tensors `candidates` names on `batch` with the run's optimizer at learning rate `lr`.
pub fn score(model: &Model, optimizer: &AdamW, batch: &DeviceBatch, lr: f64, candidates: &dyn Fn(&str) -> bool) -> Result<Importance> {
    let first = forward_backward(model, candidates, batch)?;
    let mut stepped = model.clone();
    optimizer.clone().step(&mut stepped, &first.grads, lr, 1.0);
    let second = forward_backward(&stepped, candidates, batch)?;
    let mut before = BTreeMap::new();
    model.visit(&mut |name, p| {
        if second.grads.contains_key(name) {
            before.insert(name.to_string(), p.flat());
        }
    });
    let mut raw = BTreeMap::new();
    let mut rows = BTreeMap::new();
    stepped.visit(&mut |name, after| {
        let (Some(g1), Some(w0)) = (second.grads.get(name), before.get(name)) else { return };
        let contribution = (g1.clone() * (after.flat() - w0.clone())).neg();
        if let crate::model::ParamRef::Matrix(t) = after {
            let [d_out, d_in] = t.dims();
            let per_row = contribution.clone().reshape([d_out, d_in]).sum_dim(1).reshape([d_out]);
            rows.insert(
                name.to_string(),
                per_row.try_into_vec_as::<f32>().unwrap_or_default().into_iter().map(f64::from).collect::<Vec<_>>(),
            );
        }
        let i: f32 = contribution.sum().into_scalar();
        raw.insert(name.to_string(), i as f64);
    });
    let max = raw.values().fold(0.0f64, |m, v| m.max(v.abs()));
    let scores = raw.iter().map(|(k, v)| (k.clone(), if max > 0.0 { v / max } else { 0.0 })).collect();
    Ok(Importance { scores, raw, rows, loss: first.loss })
}
