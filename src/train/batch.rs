//! A host-side batch moved onto the device, laid out for the model that trains on it.

use burn::tensor::{Int, Tensor, TensorData};

use crate::data::{Batch, IGNORE_INDEX};
use crate::model::loss::{causal_targets, counted_targets};
use crate::model::{BatchInput, Model, attention_mask};
use crate::profile::BatchShape;

#[derive(Clone)]
pub struct DeviceBatch {
    pub input: BatchInput,
    /// What the loss compares with (`Model::train_loss`): aligned with the sequence (not shifted) for
    /// a decoder-only model, the target `[B, T]` row-major for an encoder-decoder model.
    pub labels: Vec<i64>,
    pub shape: BatchShape,
    pub real_tokens: usize,
    /// Leading positions every row shares as prompt, run without gradient (see
    /// [`DeviceBatch::freeze_prompt`]); 0: the backward pass covers the whole batch.
    pub frozen_prefix: usize,
}

impl DeviceBatch {
    /// A decoder-only model reads each row whole. An encoder-decoder model reads a row's prompt
    /// (up to its first labelled position) in the encoder and its target in the decoder, each
    /// padded on the right to its own length, so `shape` carries both lengths.
    pub fn new(batch: &Batch, model: &Model) -> Self {
        let device = model.device();
        if let Model::T5(t5) = model {
            return seq2seq(batch, t5, &device);
        }
        let ids: Vec<i64> = batch.input_ids.iter().map(|&t| t as i64).collect();
        Self {
            input: BatchInput::Causal {
                ids: Tensor::from_data(TensorData::new(ids, [batch.batch, batch.seq]), &device),
                mask: attention_mask(Some(&batch.attention_mask), batch.batch, batch.seq, 0),
            },
            labels: batch.labels.clone(),
            shape: BatchShape {
                batch: batch.batch,
                seq: batch.seq,
                decoder_seq: None,
                head_tokens: Some(counted_targets(&causal_targets(&batch.labels, batch.seq), model.info().vocab_size)),
                grad_tokens: None,
            },
            real_tokens: batch.real_tokens,
            frozen_prefix: 0,
        }
    }

    /// Freezes the prompt prefix all rows share: the positions before the first one whose output
    /// has a target in any row. Training runs them through the frozen model into a key/value cache
    /// and differentiates only the rest, so the backward pass (and the profile's
    /// [`BatchShape::grad_tokens`]) covers the answers and what follows the shortest prompt. No
    /// effect on an encoder-decoder batch, whose prompt is the encoder's.
    pub fn freeze_prompt(mut self) -> Self {
        if !matches!(self.input, BatchInput::Causal { .. }) {
            return self;
        }
        let s = self.shape.seq;
        self.frozen_prefix = frozen_prefix(&self.labels, s);
        self.shape.grad_tokens = Some(self.shape.batch * (s - self.frozen_prefix));
        self
    }
}

/// The share of tokens a frozen prompt prefix leaves the backward pass, estimated from rows'
/// `(prompt, total)` token counts grouped by length into batches of `batch` (what the trainer does
/// with `group_by_length`): per batch, its longest row's length less its shortest prompt's prefix.
/// For planning before the data is batched (the app's Method tab); the trainer counts its batches.
pub fn frozen_share(rows: &[(usize, usize)], batch: usize) -> f64 {
    let mut rows = rows.to_vec();
    rows.sort_unstable_by_key(|&(_, total)| total);
    let (mut grad, mut all) = (0usize, 0usize);
    for chunk in rows.chunks(batch.max(1)) {
        let seq = chunk.iter().map(|r| r.1).max().unwrap_or(0);
        let prefix = chunk.iter().map(|r| r.0.saturating_sub(1)).min().unwrap_or(0).min(seq.saturating_sub(1));
        grad += chunk.len() * (seq - prefix);
        all += chunk.len() * seq;
    }
    if all == 0 { 1.0 } else { grad as f64 / all as f64 }
}

/// The prompt prefix `labels` (rows of `seq`, not shifted) share: the positions before the first
/// whose output has a target in any row, leaving at least one position to differentiate.
pub fn frozen_prefix(labels: &[i64], seq: usize) -> usize {
    let targets = causal_targets(labels, seq);
    let first = targets.chunks(seq.max(1)).map(|row| row.iter().position(|&t| t != IGNORE_INDEX).unwrap_or(seq)).min().unwrap_or(0);
    first.min(seq.saturating_sub(1))
}

/// Splits each right-padded row of `batch` into its prompt and its target.
fn seq2seq(batch: &Batch, t5: &crate::model::t5::T5, device: &burn::tensor::Device) -> DeviceBatch {
    let pad = t5.config.pad_token_id;
    let rows: Vec<(&[u32], &[u32])> = (0..batch.batch)
        .map(|r| {
            let span = r * batch.seq..(r + 1) * batch.seq;
            let (ids, mask, labels) = (&batch.input_ids[span.clone()], &batch.attention_mask[span.clone()], &batch.labels[span]);
            let len = mask.iter().filter(|&&m| m != 0).count();
            let prompt = labels[..len].iter().position(|&l| l != IGNORE_INDEX).unwrap_or(len);
            (&ids[..prompt], &ids[prompt..len])
        })
        .collect();
    // At least one position each, so a batch without targets (or prompts) still has a shape.
    let enc_len = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(1);
    let dec_len = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(1);
    let (mut ids, mut padding, mut labels) = (Vec::new(), Vec::new(), Vec::new());
    for (source, target) in &rows {
        let fill = enc_len - source.len();
        ids.extend(source.iter().chain(std::iter::repeat_n(&pad, fill)).map(|&t| t as i64));
        padding.extend(std::iter::repeat_n(1, source.len()).chain(std::iter::repeat_n(0, fill)));
        labels.extend(target.iter().map(|&t| t as i64).chain(std::iter::repeat_n(IGNORE_INDEX, dec_len - target.len())));
    }
    let decoder_ids = t5.shift_right(&labels, dec_len);
    let b = batch.batch;
    let head_tokens = Some(counted_targets(&labels, t5.config.vocab_size));
    DeviceBatch {
        input: BatchInput::Seq2Seq {
            ids: Tensor::from_data(TensorData::new(ids, [b, enc_len]), device),
            padding,
            decoder_ids: Tensor::<2, Int>::from_data(TensorData::new(decoder_ids, [b, dec_len]), device),
        },
        labels,
        shape: BatchShape { batch: b, seq: enc_len, decoder_seq: Some(dec_len), head_tokens, grad_tokens: None },
        real_tokens: batch.real_tokens,
        frozen_prefix: 0,
    }
}
