//! The streaming pipeline: file -> records -> mapped rows -> examples, one at a time, with
//! layout detection on the first record and the optional skipping of bad rows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokenizers::Tokenizer;

use super::LoadOptions;
use super::chat::{ChatMl, ChatTemplate};
use super::error::DataError;
use super::format::{DataFormat, RawRecord, RecordStream, open_records};
use super::mapping::{MappedRow, Mapping, Preset, detect_mapping, map_record};
use super::prompt::{Encoder, Example, PromptTemplate};

/// How many skipped-row messages a report keeps, to show the user what went wrong.
const KEPT_SKIP_MESSAGES: usize = 10;

/// What was found in a file before any row was mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceInfo {
    pub path: PathBuf,
    pub format: DataFormat,
    /// `Preset::Custom` when the caller gave the mapping.
    pub preset: Preset,
    pub mapping: Mapping,
    /// Field names of the first record, sorted.
    pub fields: Vec<String>,
}

/// Row counts of one pass over a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    /// Rows mapped (and, for examples, encoded).
    pub rows: usize,
    /// Bad rows stepped over (only with `skip_bad_rows`).
    pub skipped: usize,
    /// Examples whose source was cut to fit `max_len`.
    pub truncated_source: usize,
    /// Examples whose target alone did not fit, so its tail was cut.
    pub truncated_target: usize,
}

/// Skipped rows: how many, and the first few errors to show the user.
#[derive(Default)]
struct SkipLog {
    count: usize,
    messages: Vec<String>,
}

impl SkipLog {
    fn note(&mut self, error: &DataError) {
        self.count += 1;
        if self.messages.len() < KEPT_SKIP_MESSAGES {
            self.messages.push(error.to_string());
        }
    }

    /// The error for a file that gave no row: empty, or every row bad.
    fn nothing_usable(&self, path: &Path) -> DataError {
        let path = path.to_path_buf();
        match self.messages.first() {
            Some(first) => DataError::AllRowsSkipped { path, skipped: self.count, first: first.clone() },
            None => DataError::Empty { path },
        }
    }
}

/// Mapped rows of a file, streamed.
pub struct RowStream {
    info: SourceInfo,
    records: RecordStream,
    first: Option<RawRecord>,
    chat: Arc<dyn ChatTemplate + Send + Sync>,
    skip_bad_rows: bool,
    rows: usize,
    skipped: SkipLog,
    done: bool,
}

impl RowStream {
    /// Opens `path`, reads the first good record and settles the format and the mapping.
    pub fn open(path: &Path, opts: &LoadOptions) -> Result<RowStream, DataError> {
        let format = match opts.format {
            Some(format) => format,
            None => DataFormat::detect(path)?,
        };
        let mut records = open_records(path, format)?;
        let mut skipped = SkipLog::default();
        let first = loop {
            match records.next() {
                Some(Ok(record)) => break record,
                Some(Err(e)) if opts.skip_bad_rows && e.is_row_error() => skipped.note(&e),
                Some(Err(e)) => return Err(e),
                None => return Err(skipped.nothing_usable(path)),
            }
        };
        let fields = first.field_names();
        let (preset, mapping) = match &opts.mapping {
            Some(mapping) => (Preset::Custom, mapping.clone()),
            None => detect_mapping(&fields).ok_or_else(|| DataError::UnknownLayout { path: path.to_path_buf(), fields: fields.clone() })?,
        };
        Ok(RowStream {
            info: SourceInfo { path: path.to_path_buf(), format, preset, mapping, fields },
            records,
            first: Some(first),
            chat: opts.chat_template.clone().unwrap_or_else(|| Arc::new(ChatMl)),
            skip_bad_rows: opts.skip_bad_rows,
            rows: 0,
            skipped,
            done: false,
        })
    }

    pub fn info(&self) -> &SourceInfo {
        &self.info
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn skipped(&self) -> usize {
        self.skipped.count
    }

    /// The first few skipped rows' errors.
    pub fn skip_messages(&self) -> &[String] {
        &self.skipped.messages
    }
}

impl Iterator for RowStream {
    type Item = Result<MappedRow, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let record = match self.first.take().map(Ok).or_else(|| self.records.next()) {
                Some(record) => record,
                None => {
                    self.done = true;
                    return (self.rows == 0).then(|| Err(self.skipped.nothing_usable(&self.info.path)));
                }
            };
            let mapped = record.and_then(|r| map_record(&r, &self.info.mapping, &*self.chat, &self.info.path));
            match mapped {
                Ok(row) => {
                    self.rows += 1;
                    return Some(Ok(row));
                }
                Err(e) if self.skip_bad_rows && e.is_row_error() => self.skipped.note(&e),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// Examples of a file, streamed: each with the mapped row it came from.
pub struct ExampleStream<'t> {
    rows: RowStream,
    encoder: Encoder<'t>,
    template: PromptTemplate,
    counts: RowCounts,
}

impl<'t> ExampleStream<'t> {
    pub fn open(path: &Path, tokenizer: &'t Tokenizer, opts: &LoadOptions) -> Result<ExampleStream<'t>, DataError> {
        let rows = RowStream::open(path, opts)?;
        let template = match &opts.template {
            Some(template) => template.clone(),
            None => PromptTemplate::default_for(&rows.info().mapping),
        };
        let mut encoder = Encoder::new(tokenizer, &template, opts.max_len, opts.eos_id)?;
        if let Some(s2s) = &opts.seq2seq {
            encoder = encoder.with_seq2seq(s2s.clone())?;
        }
        if let Some(room) = opts.answer_room {
            encoder = encoder.with_answer_room(room)?;
        }
        Ok(ExampleStream { rows, encoder, template, counts: RowCounts::default() })
    }

    pub fn info(&self) -> &SourceInfo {
        self.rows.info()
    }

    pub fn template(&self) -> &PromptTemplate {
        &self.template
    }

    /// Counts so far (final once the stream is exhausted).
    pub fn counts(&self) -> RowCounts {
        RowCounts { skipped: self.rows.skipped(), ..self.counts }
    }

    pub fn skip_messages(&self) -> &[String] {
        self.rows.skip_messages()
    }
}

impl Iterator for ExampleStream<'_> {
    type Item = Result<(MappedRow, Example), DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let row = match self.rows.next()? {
            Ok(row) => row,
            Err(e) => return Some(Err(e)),
        };
        Some(self.encoder.encode(&row).map(|example| {
            self.counts.rows += 1;
            self.counts.truncated_source += usize::from(example.source_truncated);
            self.counts.truncated_target += usize::from(example.target_truncated);
            (row, example)
        }))
    }
}
