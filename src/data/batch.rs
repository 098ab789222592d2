//! Padding and batching. The order of an epoch is a pure function of (seed, epoch, lengths), so
//! a run resumes at a `DataPosition` and sees the batches it would have seen.

use std::cmp::Reverse;

use super::error::DataError;
use super::prompt::{Example, IGNORE_INDEX};
use super::shuffle::SplitMix64;

/// With length grouping, examples are sorted by length inside buckets of this many batches:
/// enough to cut padding, few enough that every batch still mixes the file (as in Hugging
/// Face's length-grouped sampler).
const BATCHES_PER_BUCKET: usize = 50;

/// A right-padded batch, row-major `[batch, seq]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub input_ids: Vec<u32>,
    /// 1 on real tokens, 0 on padding.
    pub attention_mask: Vec<u32>,
    /// Token id on target positions; `IGNORE_INDEX` on prompt and padding. Not shifted.
    pub labels: Vec<i64>,
    pub batch: usize,
    pub seq: usize,
    /// Tokens that are not padding.
    pub real_tokens: usize,
    /// Positions that carry a label (what the loss averages over).
    pub target_tokens: usize,
}

/// Pads `examples` on the right with `pad_id` to the longest of them.
pub fn pad_batch(examples: &[&Example], pad_id: u32) -> Batch {
    let seq = examples.iter().map(|e| e.seq_len()).max().unwrap_or(0);
    let size = examples.len() * seq;
    let mut batch = Batch {
        input_ids: Vec::with_capacity(size),
        attention_mask: Vec::with_capacity(size),
        labels: Vec::with_capacity(size),
        batch: examples.len(),
        seq,
        real_tokens: 0,
        target_tokens: 0,
    };
    for example in examples {
        let pad = seq - example.seq_len();
        batch.input_ids.extend_from_slice(&example.input_ids);
        batch.input_ids.extend(std::iter::repeat_n(pad_id, pad));
        batch.attention_mask.extend(std::iter::repeat_n(1, example.seq_len()));
        batch.attention_mask.extend(std::iter::repeat_n(0, pad));
        batch.labels.extend(example.labels());
        batch.labels.extend(std::iter::repeat_n(IGNORE_INDEX, pad));
        batch.real_tokens += example.seq_len();
        batch.target_tokens += example.seq_len() - example.prompt_len;
    }
    batch
}

/// How an epoch is cut into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPlan {
    pub batch_size: usize,
    /// Put examples of similar length together (less padding, less compute).
    pub group_by_length: bool,
    /// Leave out a last batch smaller than `batch_size`.
    pub drop_last: bool,
    pub seed: u64,
}

impl Default for BatchPlan {
    /// The paper's batch of 4, in plain shuffled order.
    fn default() -> Self {
        BatchPlan { batch_size: 4, group_by_length: false, drop_last: false, seed: 42 }
    }
}

/// Where a run stands: the batch to run next, within an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DataPosition {
    pub epoch: u64,
    pub batch: usize,
}

/// The batches of `epoch` as indices into the examples whose lengths are `lengths`.
///
/// Plain: one seeded shuffle, cut into batches. Grouped: the shuffled order is cut into
/// buckets, each bucket sorted longest first and cut into batches, then the batches are
/// shuffled, so batch composition and order both change from epoch to epoch.
pub fn epoch_batches(lengths: &[usize], plan: &BatchPlan, epoch: u64) -> Vec<Vec<usize>> {
    let size = plan.batch_size.max(1);
    let mut rng = SplitMix64::new(plan.seed, epoch);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    rng.shuffle(&mut order);
    if plan.group_by_length {
        for bucket in order.chunks_mut(size * BATCHES_PER_BUCKET) {
            bucket.sort_by_key(|&i| Reverse(lengths[i]));
        }
    }
    let mut batches: Vec<Vec<usize>> = order.chunks(size).map(<[usize]>::to_vec).collect();
    if plan.drop_last && batches.last().is_some_and(|b| b.len() < size) {
        batches.pop();
    }
    if plan.group_by_length {
        rng.shuffle(&mut batches);
    }
    batches
}

/// Batches over a set of examples, padded with the caller's pad id.
pub struct Batcher<'a> {
    examples: &'a [Example],
    lengths: Vec<usize>,
    plan: BatchPlan,
    pad_id: u32,
}

impl<'a> Batcher<'a> {
    pub fn new(examples: &'a [Example], plan: BatchPlan, pad_id: u32) -> Result<Batcher<'a>, DataError> {
        if plan.batch_size == 0 {
            return Err(DataError::InvalidOption("batch size must be at least 1".into()));
        }
        let lengths = examples.iter().map(Example::seq_len).collect();
        Ok(Batcher { examples, lengths, plan, pad_id })
    }

    pub fn batches_per_epoch(&self) -> usize {
        let n = self.examples.len();
        let size = self.plan.batch_size;
        if self.plan.drop_last { n / size } else { n.div_ceil(size) }
    }

    /// The batches of `from.epoch`, starting at batch `from.batch`, each with its position.
    pub fn batches_from(&self, from: DataPosition) -> impl Iterator<Item = (DataPosition, Batch)> + '_ {
        epoch_batches(&self.lengths, &self.plan, from.epoch).into_iter().enumerate().skip(from.batch).map(move |(batch, indices)| {
            let examples: Vec<&Example> = indices.iter().map(|&i| &self.examples[i]).collect();
            (DataPosition { epoch: from.epoch, batch }, pad_batch(&examples, self.pad_id))
        })
    }
}
