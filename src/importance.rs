//! Tensor importance (spec section 5): I_k = -sum(g_k(w1) * (w1_k - w0_k)), where w1 is one real
//! AdamW step from w0 on a batch and g(w1) the gradient at w1 on the same batch; normalised by
//! max |I_k|. Scored on several batches, each batch's I_k are summed before normalising (the
//! paper uses one; more average out one batch's noise). The run's weights and optimizer state are
//! never touched: the step is taken on copies (tensors are immutable handles), so nothing needs
//! restoring and nothing leaks. The passes and the update come from training ([`Scoring`],
//! `train::scoring`), so this module depends on the model alone.

use std::collections::BTreeMap;

use burn::tensor::Tensor;

use crate::error::{Error, Result};
use crate::model::{Model, Parameters};

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

/// Flat gradients by tensor name.
pub type Grads = BTreeMap<String, Tensor<1>>;

/// A forward+backward pass: the loss and the gradients of the tensors to score.
pub type Pass = Result<(f64, Grads)>;

/// What scoring needs of training, which supplies it (`train::scoring`): a forward+backward pass,
/// and the run's optimizer update.
pub struct Scoring<'a> {
    /// How many batches there are to score.
    pub batches: usize,
    /// The loss of batch `i` for the given weights, and the gradients of the tensors to score.
    pub pass: &'a dyn Fn(usize, &Model) -> Pass,
    /// One update of the given weights by these gradients (taken, so each can be freed once used),
    /// as the run's optimizer would make it
    /// from its current state (which it must leave as it is).
    pub update: &'a dyn Fn(&mut Model, Grads),
}

/// Importance on each of `scoring`'s batches, the contributions summed; `loss` is the batches'
/// mean. `before_pass(k, n)` is told before each of the `n` forward+backward passes (two per
/// batch, long on a large model); returning false stops scoring with [`Error::Cancelled`].
pub fn score_batches(model: &Model, scoring: &Scoring<'_>, before_pass: &mut dyn FnMut(usize, usize) -> bool) -> Result<Importance> {
    let mut raw: BTreeMap<String, f64> = BTreeMap::new();
    let mut rows: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut loss = 0.0;
    let passes = 2 * scoring.batches;
    for i in 0..scoring.batches {
        let mut pass = |k: usize| if before_pass(2 * i + k, passes) { Ok(()) } else { Err(Error::Cancelled) };
        let one = contributions(model, scoring, i, &mut pass)?;
        loss += one.loss / scoring.batches as f64;
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

fn contributions(model: &Model, scoring: &Scoring<'_>, batch: usize, pass: &mut dyn FnMut(usize) -> Result<()>) -> Result<Contributions> {
    pass(0)?;
    let (first_loss, first) = (scoring.pass)(batch, model)?;
    let mut stepped = model.clone();
    // The first gradients are spent as the update goes, freed before the second pass makes as
    // many again.
    (scoring.update)(&mut stepped, first);
    pass(1)?;
    let (_, second) = (scoring.pass)(batch, &stepped)?;
    // Handles to the values as stored: a quantized weight is decoded below, one tensor at a time,
    // not all at once beside the stepped f32 copy.
    let mut before = BTreeMap::new();
    model.visit(&mut |name, p| {
        if second.contains_key(name) {
            before.insert(name.to_string(), p.stored());
        }
    });
    let mut raw = BTreeMap::new();
    let mut rows = BTreeMap::new();
    // A failed read-back must fail the scoring, not leave a tensor's rows empty for the selection.
    let mut unread = None;
    stepped.visit(&mut |name, after| {
        let (Some(g1), Some(w0)) = (second.get(name), before.get(name)) else { return };
        // A low-precision or quantized frozen weight was promoted by the step
        // (`model::precision`): its f32 copy is made here, one tensor at a time.
        let w0 = w0.to_float().cast(burn::tensor::DType::F32).reshape([after.numel()]);
        let contribution = (g1.clone() * (after.flat() - w0)).neg();
        if let [d_out, d_in] = after.shape()[..] {
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
        None => Ok(Contributions { raw, rows, loss: first_loss }),
    }
}
