//! CSV with a header row. Every cell is text: a list-valued column has no CSV spelling, so
//! lists (SciTLDR's sentences, chat turns) need JSON Lines, JSON or Parquet.

use std::io::Read;
use std::path::{Path, PathBuf};

use csv::{ErrorKind, StringRecord};
use serde_json::{Map, Value};

use super::{RawRecord, io_error};
use crate::data::error::{DataError, RowPosition};

pub struct CsvRecords<R> {
    reader: csv::Reader<R>,
    headers: Vec<String>,
    path: PathBuf,
    record: StringRecord,
    done: bool,
}

impl<R: Read> CsvRecords<R> {
    pub fn new(reader: R, path: PathBuf) -> Result<Self, DataError> {
        let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(reader);
        let headers = match reader.headers() {
            Ok(h) => h.iter().map(str::to_owned).collect(),
            Err(e) => return Err(csv_error(e, &path)),
        };
        Ok(Self { reader, headers, path, record: StringRecord::new(), done: false })
    }
}

fn csv_error(e: csv::Error, path: &Path) -> DataError {
    if e.is_io_error() {
        return io_error(path, e.into());
    }
    let at = RowPosition::Line(e.position().map_or(1, |p| p.line()));
    match e.kind() {
        ErrorKind::Utf8 { .. } => DataError::NotUtf8 { path: path.to_path_buf(), at },
        _ => DataError::InvalidCsv { path: path.to_path_buf(), at, message: e.to_string() },
    }
}

impl<R: Read> Iterator for CsvRecords<R> {
    type Item = Result<RawRecord, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.reader.read_record(&mut self.record) {
            Ok(false) => {
                self.done = true;
                None
            }
            Ok(true) => {
                let line = self.record.position().map_or(0, |p| p.line());
                let fields: Map<String, Value> = self
                    .headers
                    .iter()
                    .zip(self.record.iter())
                    .map(|(name, cell)| (name.clone(), Value::String(cell.to_owned())))
                    .collect();
                Some(Ok(RawRecord { at: RowPosition::Line(line), fields }))
            }
            Err(e) => {
                let error = csv_error(e, &self.path);
                self.done = !error.is_row_error();
                Some(Err(error))
            }
        }
    }
}
