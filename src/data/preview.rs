//! What the app shows before training: the first rows after mapping, a histogram of token
//! lengths and the counts of one full pass over the file.

use std::path::Path;

use tokenizers::Tokenizer;

use super::LoadOptions;
use super::error::DataError;
use super::mapping::MappedRow;
use super::rows::{ExampleStream, RowCounts, SourceInfo};

#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    pub info: SourceInfo,
    /// The prompt template in use.
    pub template: String,
    pub rows: Vec<PreviewRow>,
    /// Token lengths before truncation, so the part beyond `max_len` shows.
    pub histogram: Vec<HistogramBin>,
    pub counts: RowCounts,
    pub skip_messages: Vec<String>,
    /// Mean tokens per row with a training target (answer and EOS, after truncation); `None`
    /// for a file with no rows.
    pub mean_target_tokens: Option<f64>,
    /// Every row's `(prompt, total)` tokens after truncation, for planning a frozen prompt prefix
    /// (`train::batch::frozen_share`).
    pub row_lengths: Vec<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PreviewRow {
    pub row: MappedRow,
    /// Tokens after truncation.
    pub tokens: usize,
    pub untruncated_tokens: usize,
}

/// Lengths in `lo..hi` (half-open).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramBin {
    pub lo: usize,
    pub hi: usize,
    pub count: usize,
}

/// Reads the whole file once (streamed), keeping `n_rows` rows and `n_bins` equal-width bins.
pub fn preview(path: &Path, tokenizer: &Tokenizer, opts: &LoadOptions, n_rows: usize, n_bins: usize) -> Result<Preview, DataError> {
    let mut stream = ExampleStream::open(path, tokenizer, opts)?;
    let mut rows = Vec::with_capacity(n_rows);
    let mut lengths = Vec::new();
    let mut target_tokens = 0usize;
    let mut row_lengths = Vec::new();
    for item in &mut stream {
        let (row, example) = item?;
        lengths.push(example.untruncated_len);
        row_lengths.push((example.seq_len() - example.target_len(), example.seq_len()));
        target_tokens += example.target_len();
        if rows.len() < n_rows {
            rows.push(PreviewRow { row, tokens: example.seq_len(), untruncated_tokens: example.untruncated_len });
        }
    }
    Ok(Preview {
        info: stream.info().clone(),
        template: stream.template().as_str().to_owned(),
        rows,
        histogram: histogram(&lengths, n_bins),
        counts: stream.counts(),
        skip_messages: stream.skip_messages().to_vec(),
        mean_target_tokens: (!lengths.is_empty()).then(|| target_tokens as f64 / lengths.len() as f64),
        row_lengths,
    })
}

/// Equal-width bins from the shortest to the longest length.
pub fn histogram(lengths: &[usize], n_bins: usize) -> Vec<HistogramBin> {
    let (Some(&min), Some(&max)) = (lengths.iter().min(), lengths.iter().max()) else {
        return Vec::new();
    };
    if n_bins == 0 {
        return Vec::new();
    }
    let width = (max - min + 1).div_ceil(n_bins);
    let mut bins: Vec<HistogramBin> = (0..n_bins)
        .map(|i| HistogramBin { lo: min + i * width, hi: min + (i + 1) * width, count: 0 })
        .take_while(|b| b.lo <= max)
        .collect();
    for &len in lengths {
        bins[(len - min) / width].count += 1;
    }
    bins
}
