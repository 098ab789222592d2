//! Cross-entropy as transformers computes it: labels of -100 are ignored, the mean is over the
//! remaining tokens. A causal LM's logits at position t predict label t+1; a sequence-to-sequence
//! model's (teacher-forced on shifted labels) predict label t.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

pub const IGNORE_INDEX: i64 = -100;

/// Mean cross-entropy of `logits [B, S, V]` against `labels` (`B*S`, row-major). Returns the
/// loss tensor and the number of tokens it averages over (0 gives a zero loss).
pub fn causal_lm_loss(logits: Tensor<3>, labels: &[i64]) -> (Tensor<1>, usize) {
    let [_, s, _] = logits.dims();
    let shifted: Vec<i64> = labels.chunks(s).flat_map(|row| row[1..].iter().copied()).collect();
    mean_cross_entropy(logits.narrow(1, 0, s - 1), &shifted)
}

/// Mean cross-entropy of `logits [B, T, V]` against `labels` (`B*T`, row-major) at the same
/// positions, as `T5ForConditionalGeneration` computes it. Returns the loss and its token count.
pub fn seq2seq_lm_loss(logits: Tensor<3>, labels: &[i64]) -> (Tensor<1>, usize) {
    mean_cross_entropy(logits, labels)
}

fn mean_cross_entropy(logits: Tensor<3>, labels: &[i64]) -> (Tensor<1>, usize) {
    let [b, s, v] = logits.dims();
    let device = logits.device();
    let n = b * s;
    let counted = |label: i64| label != IGNORE_INDEX && (0..v as i64).contains(&label);
    let targets: Vec<i64> = labels.iter().map(|&l| if counted(l) { l } else { 0 }).collect();
    let weights: Vec<f32> = labels.iter().map(|&l| if counted(l) { 1.0 } else { 0.0 }).collect();
    let count = weights.iter().filter(|w| **w > 0.0).count();
    let logp = log_softmax(logits.reshape([n, v]), 1);
    let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
    let picked = logp.gather(1, targets).reshape([n]);
    let weights = Tensor::<1>::from_data(TensorData::new(weights, [n]), &device);
    let loss = (picked * weights).sum().neg().div_scalar(count.max(1) as f64);
    (loss, count)
}
