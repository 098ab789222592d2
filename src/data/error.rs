//! Errors of the data pipeline. Every message names the file and, for row problems, where in it.

use std::fmt;
use std::path::PathBuf;

/// Where a record sits in its file: a 1-based line for text formats, a 1-based row for Parquet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowPosition {
    Line(u64),
    Row(u64),
}

impl fmt::Display for RowPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RowPosition::Line(n) => write!(f, "line {n}"),
            RowPosition::Row(n) => write!(f, "row {n}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    #[error("{path}: the file holds no records")]
    Empty { path: PathBuf },

    #[error("{path}: cannot tell the format from the name or the first bytes; use .jsonl, .json, .csv or .parquet")]
    UnknownFormat { path: PathBuf },

    #[error("{path}, {at}: invalid JSON: {message}")]
    InvalidJson { path: PathBuf, at: RowPosition, message: String },

    /// The file is not a well-formed top-level JSON array, so no later element can be trusted.
    #[error("{path}, {at}: {message}")]
    JsonStructure { path: PathBuf, at: RowPosition, message: String },

    #[error("{path}, {at}: the text is not valid UTF-8")]
    NotUtf8 { path: PathBuf, at: RowPosition },

    #[error("{path}, {at}: invalid CSV: {message}")]
    InvalidCsv { path: PathBuf, at: RowPosition, message: String },

    #[error("{path}: Parquet: {message}")]
    Parquet { path: PathBuf, message: String },

    #[error("{path}, {at}: missing field `{field}`; the record has: {}", available.join(", "))]
    MissingField { path: PathBuf, at: RowPosition, field: String, available: Vec<String> },

    #[error("{path}, {at}: field `{field}` {problem}")]
    BadField { path: PathBuf, at: RowPosition, field: String, problem: String },

    #[error("{path}: no known layout (DialogSum, SciTLDR, Alpaca, ShareGPT, messages) fits the fields [{}]; choose the source and target columns", fields.join(", "))]
    UnknownLayout { path: PathBuf, fields: Vec<String> },

    #[error("{path}: the mapping has no target field, so the file serves prediction only (fields: {})", fields.join(", "))]
    NoTargets { path: PathBuf, fields: Vec<String> },

    #[error("{path}: all {skipped} records were bad and skipped; the first: {first}")]
    AllRowsSkipped { path: PathBuf, skipped: usize, first: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("invalid option: {0}")]
    InvalidOption(String),
}

impl DataError {
    /// True for a problem confined to one record, which `skip_bad_rows` may step over.
    pub fn is_row_error(&self) -> bool {
        matches!(
            self,
            DataError::InvalidJson { .. }
                | DataError::NotUtf8 { .. }
                | DataError::InvalidCsv { .. }
                | DataError::MissingField { .. }
                | DataError::BadField { .. }
        )
    }
}
