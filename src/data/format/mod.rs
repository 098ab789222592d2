//! Streaming readers that turn a dataset file into records, one at a time, so a file larger than
//! memory can be read. Every format yields the same `RawRecord`: field name -> JSON value.

mod csv_file;
mod json_array;
mod jsonl;
mod parquet_file;

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use serde_json::{Map, Value};

use super::error::{DataError, RowPosition};

/// The file formats the loader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFormat {
    /// One JSON object per line.
    Jsonl,
    /// One top-level JSON array of objects.
    JsonArray,
    /// Comma-separated, with a header row; every cell is text.
    Csv,
    Parquet,
}

impl DataFormat {
    /// Picks the format from the extension, then from the first bytes: a `.json` file that
    /// starts with `{` is JSON Lines, which many exporters write under that name.
    pub fn detect(path: &Path) -> Result<DataFormat, DataError> {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("jsonl" | "ndjson") => return Ok(DataFormat::Jsonl),
            Some("csv") => return Ok(DataFormat::Csv),
            Some("parquet" | "pq") => return Ok(DataFormat::Parquet),
            _ => {}
        }
        let head = read_head(path)?;
        if head.starts_with(b"PAR1") {
            return Ok(DataFormat::Parquet);
        }
        let first = strip_bom(&head).iter().copied().find(|b| !b.is_ascii_whitespace());
        match first {
            Some(b'[') => Ok(DataFormat::JsonArray),
            Some(b'{') => Ok(DataFormat::Jsonl),
            None => Err(DataError::Empty { path: path.to_path_buf() }),
            Some(_) => Err(DataError::UnknownFormat { path: path.to_path_buf() }),
        }
    }
}

impl std::fmt::Display for DataFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DataFormat::Jsonl => "JSON Lines",
            DataFormat::JsonArray => "JSON array",
            DataFormat::Csv => "CSV",
            DataFormat::Parquet => "Parquet",
        })
    }
}

/// One record as read from the file, before any column mapping.
#[derive(Debug, Clone)]
pub struct RawRecord {
    pub at: RowPosition,
    pub fields: Map<String, Value>,
}

impl RawRecord {
    pub fn field_names(&self) -> Vec<String> {
        self.fields.keys().cloned().collect()
    }
}

/// A lazy sequence of records. After a fatal error it yields nothing more.
pub type RecordStream = Box<dyn Iterator<Item = Result<RawRecord, DataError>>>;

/// Opens `path` as `format` and streams its records.
pub fn open_records(path: &Path, format: DataFormat) -> Result<RecordStream, DataError> {
    let path = path.to_path_buf();
    Ok(match format {
        DataFormat::Jsonl => Box::new(jsonl::JsonlRecords::new(open(&path)?, path)),
        DataFormat::JsonArray => Box::new(json_array::JsonArrayRecords::new(open(&path)?, path)),
        DataFormat::Csv => Box::new(csv_file::CsvRecords::new(open(&path)?, path)?),
        DataFormat::Parquet => Box::new(parquet_file::ParquetRecords::new(path)?),
    })
}

fn open(path: &Path) -> Result<BufReader<File>, DataError> {
    File::open(path).map(BufReader::new).map_err(|e| io_error(path, e))
}

fn read_head(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut head = Vec::with_capacity(64);
    File::open(path).and_then(|f| f.take(64).read_to_end(&mut head)).map_err(|e| io_error(path, e))?;
    Ok(head)
}

fn io_error(path: &Path, source: std::io::Error) -> DataError {
    DataError::Io { path: path.to_path_buf(), source }
}

/// Drops the UTF-8 byte-order mark some editors put at the start of text files.
fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// Parses one JSON text that must be an object; errors are located by `line_of`.
fn parse_object(bytes: &[u8], path: &Path, line_of: impl Fn(usize) -> u64) -> Result<Map<String, Value>, DataError> {
    if std::str::from_utf8(bytes).is_err() {
        let bad_line = bytes.split(|&b| b == b'\n').position(|l| std::str::from_utf8(l).is_err());
        return Err(DataError::NotUtf8 { path: path.to_path_buf(), at: RowPosition::Line(line_of(bad_line.unwrap_or(0) + 1)) });
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(other) => Err(DataError::InvalidJson {
            path: path.to_path_buf(),
            at: RowPosition::Line(line_of(1)),
            message: format!("expected an object, found {}", json_kind(&other)),
        }),
        Err(e) => Err(DataError::InvalidJson {
            path: path.to_path_buf(),
            at: RowPosition::Line(line_of(e.line().max(1))),
            message: json_message(&e),
        }),
    }
}

/// serde_json's message without its "at line L column C" tail, whose line counts from the
/// start of the parsed slice rather than the file; the column is still right, so keep it.
fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let base = text.rsplit_once(" at line ").map_or(text.as_str(), |(base, _)| base);
    format!("{base} (column {})", e.column())
}

pub(crate) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}
