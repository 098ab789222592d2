//! Summarization data: a dataset file in, tokenized and batched causal-LM examples out.
//!
//! file (JSONL, JSON array, CSV, Parquet; streamed) -> records (field -> JSON value)
//! -> mapped rows (source, target, references; presets guess the fields)
//! -> examples (`{source} TL;DR: {target}` + EOS, loss on the target, source cut to `max_len`;
//!    for an encoder-decoder model the prompt and the target apart, see `Seq2Seq`)
//! -> padded batches in a seeded order that a run can resume.
//!
//! Presets: DialogSum, SciTLDR, Alpaca, ShareGPT and `messages` lists are recognised by their
//! field names. A DialogSum file with dialogues but no summaries (the hidden test split) loads
//! as prediction-only rows (no target, prompt only); `Dataset::require_targets` turns that into
//! an error where training needs targets. A file with no known source field (the hidden test
//! topics) is an `UnknownLayout` error listing its fields.
//!
//! Outputs are plain vectors; tensors are the trainer's business.

mod batch;
mod chat;
mod demo;
mod error;
mod format;
mod jinja;
mod mapping;
mod preview;
mod prompt;
mod rows;
mod shuffle;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokenizers::Tokenizer;

pub use batch::{Batch, BatchPlan, Batcher, DataPosition, epoch_batches, pad_batch};
pub use chat::{ChatMessage, ChatMl, ChatTemplate};
pub use demo::{DEMO_README, DEMO_TEST_JSONL, DEMO_TRAIN_JSONL, DemoFiles, write_demo_files};
pub use error::{DataError, RowPosition};
pub use format::DataFormat;
pub use jinja::JinjaChatTemplate;
pub use mapping::{MappedRow, Mapping, Preset, detect_mapping};
pub use preview::{HistogramBin, Preview, PreviewRow, histogram, preview};
pub use prompt::{Encoder, Example, IGNORE_INDEX, PromptTemplate, Seq2Seq};
pub use rows::{ExampleStream, RowCounts, RowStream, SourceInfo};
pub use shuffle::{seeded_shuffle, split_by_ratio};

/// How to read and encode a file. `None` fields are detected.
#[derive(Clone)]
pub struct LoadOptions {
    /// None: from the extension, then the first bytes.
    pub format: Option<DataFormat>,
    /// None: from the first record's field names (a preset).
    pub mapping: Option<Mapping>,
    /// None: `PromptTemplate::SUMMARY`, or `CHAT` for conversations.
    pub template: Option<PromptTemplate>,
    /// The model's chat template for conversation data; None: ChatML.
    pub chat_template: Option<Arc<dyn ChatTemplate + Send + Sync>>,
    /// Longest example in tokens (prompt + target + EOS); for an encoder-decoder model
    /// (`seq2seq`), the longest encoder input and, apart, the longest target + EOS.
    pub max_len: usize,
    /// Appended after every target.
    pub eos_id: u32,
    /// Step over (and count) rows that cannot be read or mapped instead of failing.
    pub skip_bad_rows: bool,
    /// Encode for an encoder-decoder model; `None`: one causal-LM sequence.
    pub seq2seq: Option<Seq2Seq>,
    /// Evaluation: cut each prompt to leave this many tokens of `max_len` for the answer, whatever
    /// the reference's length, so the model sees the same prompt whichever reference a row has
    /// (the target is cut to the same room). `None`: training, where the source makes room for
    /// the whole target.
    pub answer_room: Option<usize>,
}

impl LoadOptions {
    pub fn new(max_len: usize, eos_id: u32) -> LoadOptions {
        LoadOptions {
            format: None,
            mapping: None,
            template: None,
            chat_template: None,
            max_len,
            eos_id,
            skip_bad_rows: false,
            seq2seq: None,
            answer_room: None,
        }
    }
}

impl std::fmt::Debug for LoadOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadOptions")
            .field("format", &self.format)
            .field("mapping", &self.mapping)
            .field("template", &self.template)
            .field("chat_template", &self.chat_template.as_ref().map_or("ChatML", |_| "custom"))
            .field("max_len", &self.max_len)
            .field("eos_id", &self.eos_id)
            .field("skip_bad_rows", &self.skip_bad_rows)
            .field("seq2seq", &self.seq2seq)
            .finish()
    }
}

/// What loading a file found and did.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    pub info: SourceInfo,
    /// The prompt template in use.
    pub template: String,
    pub counts: RowCounts,
    /// The first few skipped rows' errors.
    pub skip_messages: Vec<String>,
}

/// The examples of one file, in file order.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub examples: Vec<Example>,
    pub report: LoadReport,
}

impl Dataset {
    /// Fails for prediction-only data (a mapping without target), which cannot be trained on.
    pub fn require_targets(&self) -> Result<(), DataError> {
        let info = &self.report.info;
        if info.mapping.has_target() { Ok(()) } else { Err(DataError::NoTargets { path: info.path.clone(), fields: info.fields.clone() }) }
    }
}

/// Reads, maps and encodes a whole file.
pub fn load_dataset(path: &Path, tokenizer: &Tokenizer, opts: &LoadOptions) -> Result<Dataset, DataError> {
    let mut stream = ExampleStream::open(path, tokenizer, opts)?;
    let examples = (&mut stream).map(|item| item.map(|(_, example)| example)).collect::<Result<_, _>>()?;
    let report = LoadReport {
        info: stream.info().clone(),
        template: stream.template().as_str().to_owned(),
        counts: stream.counts(),
        skip_messages: stream.skip_messages().to_vec(),
    };
    Ok(Dataset { examples, report })
}

/// Where validation examples come from.
#[derive(Debug, Clone, PartialEq)]
pub enum ValidationSource {
    /// A seeded share of the training file.
    Fraction { fraction: f64, seed: u64 },
    /// A second file, read with the same options (its layout detected on its own when the
    /// options name no mapping: DialogSum dev has `summary`, test `summary1..3`).
    File(PathBuf),
}

/// Training and validation examples. After a split by fraction both reports describe the one
/// file they came from.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Dataset,
    pub validation: Dataset,
}

pub fn load_splits(
    train_path: &Path,
    validation: &ValidationSource,
    tokenizer: &Tokenizer,
    opts: &LoadOptions,
) -> Result<Splits, DataError> {
    let train = load_dataset(train_path, tokenizer, opts)?;
    match validation {
        ValidationSource::File(path) => Ok(Splits { train, validation: load_dataset(path, tokenizer, opts)? }),
        ValidationSource::Fraction { fraction, seed } => {
            let (train_examples, validation_examples) = split_by_ratio(train.examples, *fraction, *seed)?;
            Ok(Splits {
                validation: Dataset { examples: validation_examples, report: train.report.clone() },
                train: Dataset { examples: train_examples, report: train.report },
            })
        }
    }
}
