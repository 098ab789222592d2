//! GreenTrainer's importance ([`crate::importance`]) as training scores it: its two passes are this
//! crate's forward+backward pass, its update one step of the run's AdamW taken on a copy of the
//! weights from the optimizer's state, which it leaves untouched (`AdamW::step_detached`).

use crate::error::Result;
use crate::importance::{self, Importance, Scoring};
use crate::model::Model;

use super::batch::DeviceBatch;
use super::optim::AdamW;
use super::step::forward_backward;

/// Scores the tensors `candidates` names on `batch` with the run's optimizer at learning rate `lr`.
pub fn score(model: &Model, optimizer: &AdamW, batch: &DeviceBatch, lr: f64, candidates: &dyn Fn(&str) -> bool) -> Result<Importance> {
    score_batches(model, optimizer, std::slice::from_ref(batch), lr, candidates, &mut |_, _| true)
}

/// [`score`] on each of `batches`, summed ([`importance::score_batches`], which `before_pass`
/// is handed to).
pub fn score_batches(
    model: &Model,
    optimizer: &AdamW,
    batches: &[DeviceBatch],
    lr: f64,
    candidates: &dyn Fn(&str) -> bool,
    before_pass: &mut dyn FnMut(usize, usize) -> bool,
) -> Result<Importance> {
    let pass = |i: usize, weights: &Model| forward_backward(weights, candidates, &batches[i]).map(|p| (p.loss, p.grads));
    let update = |weights: &mut Model, grads: importance::Grads| optimizer.step_detached(weights, grads, lr);
    importance::score_batches(model, &Scoring { batches: batches.len(), pass: &pass, update: &update }, before_pass)
}
