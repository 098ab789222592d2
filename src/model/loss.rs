//! Causal-LM cross-entropy as transformers computes it: logits at position t predict label t+1,
//! labels of -100 are ignored, the mean is over the remaining tokens.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};

pub const IGNORE_INDEX: i64 = -100;

/// Mean cross-entropy of `logits [B, S, V]` against `labels` (`B*S`, row-major). Returns the
/// loss tensor and the number of tokens it averages over (0 gives a zero loss).
pub fn causal_lm_loss(logits: Tensor<3>, labels: &[i64]) -> (Tensor<1>, usize) {
    let [b, s, v] = logits.dims();
    let device = logits.device();
    let n = b * (s - 1);
    let mut targets = Vec::with_capacity(n);
    let mut weights = Vec::with_capacity(n);
    for row in 0..b {
        for t in 1..s {
            let label = labels[row * s + t];
            let counted = label != IGNORE_INDEX && (0..v as i64).contains(&label);
            targets.push(if counted { label } else { 0 });
            weights.push(if counted { 1f32 } else { 0f32 });
        }
    }
    let count = weights.iter().filter(|w| **w > 0.0).count();
    let logp = log_softmax(logits.narrow(1, 0, s - 1).reshape([n, v]), 1);
    let targets = Tensor::<2, Int>::from_data(TensorData::new(targets, [n, 1]), &device);
    let picked = logp.gather(1, targets).reshape([n]);
    let weights = Tensor::<1>::from_data(TensorData::new(weights, [n]), &device);
    let loss = (picked * weights).sum().neg().div_scalar(count.max(1) as f64);
    (loss, count)
}
