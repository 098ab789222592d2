//! Parquet through the crate's record API, which decodes one row group at a time.

use std::fs::File;
use std::path::{Path, PathBuf};

use parquet::file::serialized_reader::SerializedFileReader;
use parquet::record::reader::RowIter;
use parquet::record::{Field, Row};
use serde_json::{Map, Number, Value};

use super::{RawRecord, io_error};
use crate::data::error::{DataError, RowPosition};

pub struct ParquetRecords {
    rows: RowIter<'static>,
    path: PathBuf,
    row: u64,
    done: bool,
}

impl ParquetRecords {
    pub fn new(path: PathBuf) -> Result<Self, DataError> {
        let file = File::open(&path).map_err(|e| io_error(&path, e))?;
        let reader = SerializedFileReader::new(file).map_err(|e| parquet_error(&path, e))?;
        // The owning form of `get_row_iter(None)`: the stream keeps its reader, so it has no
        // lifetime to carry.
        Ok(Self { rows: reader.into_iter(), path, row: 0, done: false })
    }
}

fn parquet_error(path: &Path, e: parquet::errors::ParquetError) -> DataError {
    DataError::Parquet { path: path.to_path_buf(), message: e.to_string() }
}

impl Iterator for ParquetRecords {
    type Item = Result<RawRecord, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let row = match self.rows.next()? {
            Ok(row) => row,
            Err(e) => {
                self.done = true;
                return Some(Err(parquet_error(&self.path, e)));
            }
        };
        self.row += 1;
        let at = RowPosition::Row(self.row);
        Some(match row_to_json(&row) {
            Some(fields) => Ok(RawRecord { at, fields }),
            None => Err(DataError::NotUtf8 { path: self.path.clone(), at }),
        })
    }
}

/// None when a binary column holds bytes that are not UTF-8 text.
fn row_to_json(row: &Row) -> Option<Map<String, Value>> {
    row.get_column_iter().map(|(name, field)| Some((name.clone(), field_to_json(field)?))).collect()
}

fn field_to_json(field: &Field) -> Option<Value> {
    Some(match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => Value::from(*n),
        Field::Short(n) => Value::from(*n),
        Field::Int(n) => Value::from(*n),
        Field::Long(n) => Value::from(*n),
        Field::UByte(n) => Value::from(*n),
        Field::UShort(n) => Value::from(*n),
        Field::UInt(n) => Value::from(*n),
        Field::ULong(n) => Value::from(*n),
        Field::Float(x) => Number::from_f64(f64::from(*x)).map_or(Value::Null, Value::Number),
        Field::Double(x) => Number::from_f64(*x).map_or(Value::Null, Value::Number),
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(b) => Value::String(std::str::from_utf8(b.data()).ok()?.to_owned()),
        Field::ListInternal(list) => Value::Array(list.elements().iter().map(field_to_json).collect::<Option<_>>()?),
        Field::Group(row) => Value::Object(row_to_json(row)?),
        Field::MapInternal(map) => Value::Object(
            map.entries()
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        Field::Str(s) => s.clone(),
                        other => other.to_string(),
                    };
                    Some((key, field_to_json(v)?))
                })
                .collect::<Option<_>>()?,
        ),
        // Dates, times, decimals and half floats are never text to train on; their display
        // form is enough to show them in a preview.
        other => Value::String(other.to_string()),
    })
}
