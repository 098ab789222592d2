//! Cross-entropy as transformers computes it: labels of -100 are ignored, the mean is over the
//! remaining tokens. A causal LM's logits at position t predict label t+1; a sequence-to-sequence
//! model's (teacher-forced on shifted labels) predict label t.

use burn::tensor::activation::log_softmax;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};

use crate::kernels::frozen;

pub const IGNORE_INDEX: i64 = -100;

/// Whether `target` takes part in the loss: not [`IGNORE_INDEX`] and inside the vocabulary.
fn is_counted(target: i64, vocab: usize) -> bool {
    target != IGNORE_INDEX && (0..vocab as i64).contains(&target)
}

/// The tokens a loss over `targets` averages over, which are all the LM head runs on in training.
pub fn counted_targets(targets: &[i64], vocab: usize) -> usize {
    targets.iter().filter(|&&t| is_counted(t, vocab)).count()
}

/// A causal LM's targets at every position of `labels` (`B*S`, row-major): position t predicts
/// label t+1, and each row's last position predicts nothing. Shifting the labels rather than
/// narrowing the logits keeps the hidden states contiguous.
pub fn causal_targets(labels: &[i64], s: usize) -> Vec<i64> {
    labels.chunks(s).flat_map(|row| row[1..].iter().copied().chain([IGNORE_INDEX])).collect()
}

/// Mean cross-entropy of `hidden [N, d]` through the LM head `[V, d]` against `targets` (N
/// entries; [`IGNORE_INDEX`] or out-of-vocabulary ones are not counted). Returns the loss and the
/// number of tokens it averages over.
///
/// Only positions with a target reach the head: a prompt's and padding's logits would be
/// computed, and differentiated, for nothing (in an instruction dataset most tokens are prompt).
/// The profiler charges the head for these tokens alone ([`crate::profile::BatchShape::head_tokens`]),
/// so GreenTrainer's budget reaches deeper for the same rho.
///
/// When the `[N, V]` logits fit in half of what the device binds in one buffer and in
/// [`WHOLE_LOGITS_MAX_BYTES`] they are built whole and autodiff differentiates the log-softmax:
/// that is the fastest path (chunks of 32 MiB made full fine-tuning steps 1.4-2.0x slower on an
/// H100, 1.3x on the CPU). Otherwise (a laptop GPU or lavapipe binding 128 MiB, a large
/// vocabulary at a long batch) the head runs in chunks ([`head_chunk_bytes`],
/// [`head_cross_entropy_chunked`]), which a small binding could not hold whole.
pub fn head_cross_entropy(hidden: Tensor<2>, head: Tensor<2>, targets: &[i64]) -> (Tensor<1>, usize) {
    let vocab = head.dims()[0];
    let keep: Vec<i64> = (0..targets.len()).filter(|&i| is_counted(targets[i], vocab)).map(|i| i as i64).collect();
    if keep.is_empty() {
        // Nothing to learn from: a zero loss that still reaches the graph (zero gradients).
        return (hidden.sum().mul_scalar(0.0), 0);
    }
    let (hidden, targets) = if keep.len() == targets.len() {
        (hidden, targets.to_vec())
    } else {
        let device = hidden.device();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(keep.clone(), [keep.len()]), &device);
        (hidden.select(0, idx), keep.iter().map(|&i| targets[i as usize]).collect())
    };
    let targets = &targets[..];
    let [n, _] = hidden.dims();
    let row_bytes = vocab * size_of::<f32>();
    match head_chunk_bytes((n * row_bytes) as u64, crate::device::binding_limit(&hidden.device())) {
        Some(chunk) => head_cross_entropy_chunked(hidden, head, targets, chunk as usize / row_bytes),
        None => mean_cross_entropy(frozen::linear(hidden, head).reshape([1, n, vocab]), targets),
    }
}

/// The largest `[N, V]` logits the loss builds whole on any device: three copies live at once,
/// so 512 MiB of logits already cost 1.5 GiB (a 128k vocabulary at 4 x 256 tokens); above it the
/// memory matters more than the head's speed.
pub const WHOLE_LOGITS_MAX_BYTES: u64 = 512 << 20;

/// The bytes of logits per chunk when `logits` bytes of them are not built whole (see
/// [`head_cross_entropy`]): over half of what the device binds in one buffer (`binding`) or
/// over [`WHOLE_LOGITS_MAX_BYTES`], chunks of half the whole-logits limit.
pub fn head_chunk_bytes(logits: u64, binding: Option<u64>) -> Option<u64> {
    let whole_max = binding.map_or(WHOLE_LOGITS_MAX_BYTES, |limit| (limit / 2).min(WHOLE_LOGITS_MAX_BYTES));
    (logits > whole_max).then_some(whole_max / 2)
}

/// [`head_cross_entropy`] in chunks of `rows` tokens, equal in value and gradients to the whole
/// logits followed by [`mean_cross_entropy`], without ever holding more than a chunk of them: the
/// head, softmax and loss run chunk by chunk, and each chunk's gradients (`dH = G W`,
/// `dW = G^T H` with `G = softmax - onehot`) are computed right there, while its logits exist.
/// Autodiff then receives them through a surrogate whose gradient they are:
/// `sum(hidden * dH) + sum(head * dW)`, added with value zero to the loss.
pub fn head_cross_entropy_chunked(hidden: Tensor<2>, head: Tensor<2>, targets: &[i64], rows: usize) -> (Tensor<1>, usize) {
    let [n, _] = hidden.dims();
    let v = head.dims()[0];
    let device = hidden.device();
    let counted = |t: i64| is_counted(t, v);
    let count = counted_targets(targets, v);
    let scale = 1.0 / count.max(1) as f64;
    let (want_dh, want_dw) = (hidden.is_tracked(), head.is_tracked());
    let (h, w) = (hidden.clone().detach(), head.clone().detach());
    let rows = rows.clamp(1, n.max(1));
    let mut loss_sum = Tensor::<1>::zeros([1], &device);
    let mut dh_chunks = Vec::new();
    let mut dw: Option<Tensor<2>> = None;
    for start in (0..n).step_by(rows) {
        let len = rows.min(n - start);
        let chunk = &targets[start..start + len];
        let idx: Vec<i64> = chunk.iter().map(|&t| if counted(t) { t } else { 0 }).collect();
        let weights: Vec<f32> = chunk.iter().map(|&t| if counted(t) { 1.0 } else { 0.0 }).collect();
        let idx = Tensor::<2, Int>::from_data(TensorData::new(idx, [len, 1]), &device);
        let weights = Tensor::<2>::from_data(TensorData::new(weights, [len, 1]), &device);
        let hc = h.clone().narrow(0, start, len);
        let logits = frozen::linear(hc.clone(), w.clone());
        let shifted = logits.clone() - logits.max_dim(1);
        let exp = shifted.clone().exp();
        let total = exp.clone().sum_dim(1);
        let picked = shifted.gather(1, idx.clone());
        loss_sum = loss_sum + ((total.clone().log() - picked) * weights.clone()).sum();
        if want_dh || want_dw {
            let minus_one = Tensor::<2>::full([len, 1], -1.0, &device);
            let g = (exp / total).scatter(1, idx, minus_one, IndexingUpdateOp::Add) * weights.mul_scalar(scale);
            if want_dh {
                dh_chunks.push(frozen::linear_dx(g.clone(), w.clone()));
            }
            if want_dw {
                let part = g.transpose().matmul(hc);
                dw = Some(match dw {
                    Some(acc) => acc + part,
                    None => part,
                });
            }
        }
    }
    let mut loss = loss_sum.mul_scalar(scale);
    let mut surrogate: Option<Tensor<1>> = None;
    if want_dh {
        surrogate = Some((hidden * Tensor::cat(dh_chunks, 0)).sum());
    }
    if let Some(dw) = dw {
        let part = (head * dw).sum();
        surrogate = Some(match surrogate {
            Some(s) => s + part,
            None => part,
        });
    }
    if let Some(s) = surrogate {
        loss = loss + (s.clone() - s.detach());
    }
    (loss, count)
}

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

/// Log-softmax over the whole `[B, T, V]` logits (also what the chunked loss is tested against).
fn mean_cross_entropy(logits: Tensor<3>, labels: &[i64]) -> (Tensor<1>, usize) {
    let [b, s, v] = logits.dims();
    let device = logits.device();
    let n = b * s;
    let counted = |label: i64| is_counted(label, v);
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
