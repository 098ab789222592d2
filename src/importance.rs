//! Tensor importance (spec section 5): I_k = -sum(g_k(w1) * (w1_k - w0_k)), where w1 is one real
//! AdamW step from w0 on a batch and g(w1) the gradient at w1 on the same batch; normalised by
//! max |I_k|. Scored on several batches, each batch's I_k are summed before normalising (the
//! paper uses one; more average out one batch's noise). The run's weights and optimizer state are
//! never touched: the step is taken on copies (tensors are immutable handles), so nothing needs
//! restoring and nothing leaks.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
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
    score_batches(model, optimizer, std::slice::from_ref(batch), lr, candidates, &mut |_, _| true)
}

/// [`score`] on each of `batches`, the contributions summed; `loss` is the batches' mean.
/// `before_pass(k, n)` is told before each of the `n` forward+backward passes (two per batch,
/// long on a large model); returning false stops scoring with [`Error::Cancelled`].
pub fn score_batches(
    model: &Model,
    optimizer: &AdamW,
    batches: &[DeviceBatch],
    lr: f64,
    candidates: &dyn Fn(&str) -> bool,
    before_pass: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Importance> {
    let mut raw: BTreeMap<String, f64> = BTreeMap::new();
    let mut rows: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut loss = 0.0;
    let passes = 2 * batches.len();
    for (i, batch) in batches.iter().enumerate() {
        let mut pass = |k: usize| if before_pass(2 * i + k, passes) { Ok(()) } else { Err(Error::Cancelled) };
        let one = contributions(model, optimizer, batch, lr, candidates, &mut pass)?;
        loss += one.loss / batches.len() as f64;
        for (name, v) in one.raw {
            *raw.entry(name).or_default() += v;
        }
        for (name, per_row) in one.rows {
            let sum = rows.entry(name).or_insert_with(|| vec![0.0; per_row.len()]);
            sum.iter_mut().zip(per_row).for_each(|(s, v)| *s += v);
        }
    }
    let max = raw.values().fold(0.0f64, |m, v| m.max(v.abs()));
    let scores = raw.iter().map(|(k, v)| (k.clone(), if max > 0.0 { v / max } else { 0.0 })).collect();
    Ok(Importance { scores, raw, rows, loss })
}

/// One batch's unnormalised importance per tensor and per row.
struct Contributions {
    raw: BTreeMap<String, f64>,
    rows: BTreeMap<String, Vec<f64>>,
    loss: f64,
}

fn contributions(
    model: &Model,
    optimizer: &AdamW,
    batch: &DeviceBatch,
    lr: f64,
    candidates: &dyn Fn(&str) -> bool,
    pass: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<Contributions> {
    pass(0)?;
    let first = forward_backward(model, candidates, batch)?;
    let mut stepped = model.clone();
    optimizer.clone().step(&mut stepped, &first.grads, lr, 1.0);
    pass(1)?;
    let second = forward_backward(&stepped, candidates, batch)?;
    let mut before = BTreeMap::new();
    model.visit(&mut |name, p| {
        if second.grads.contains_key(name) {
            before.insert(name.to_string(), p.flat());
        }
    });
    let mut raw = BTreeMap::new();
    let mut rows = BTreeMap::new();
    // A failed read-back must fail the scoring, not leave a tensor's rows empty for the selection.
    let mut unread = None;
    stepped.visit(&mut |name, after| {
        let (Some(g1), Some(w0)) = (second.grads.get(name), before.get(name)) else { return };
        let contribution = (g1.clone() * (after.flat() - w0.clone())).neg();
        if let crate::model::ParamRef::Matrix(t) = after {
            let [d_out, d_in] = t.dims();
            let per_row = contribution.clone().reshape([d_out, d_in]).sum_dim(1).reshape([d_out]);
            match per_row.try_into_vec_as::<f32>() {
                Ok(values) => {
                    rows.insert(name.to_string(), values.into_iter().map(f64::from).collect::<Vec<_>>());
                }
                Err(e) => {
                    unread.get_or_insert_with(|| Error::Other(format!("importance of {name}: reading it from the device failed: {e:?}")));
                }
            }
        }
        let i: f32 = contribution.sum().into_scalar();
        raw.insert(name.to_string(), i as f64);
    });
    match unread {
        Some(e) => Err(e),
        None => Ok(Contributions { raw, rows, loss: first.loss }),
    }
}
