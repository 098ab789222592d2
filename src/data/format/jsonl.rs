//! JSON Lines: one object per line, read line by line. Blank lines are ignored.

use std::io::BufRead;
use std::path::PathBuf;

use super::{RawRecord, io_error, parse_object, strip_bom};
use crate::data::error::{DataError, RowPosition};

pub struct JsonlRecords<R> {
    reader: R,
    path: PathBuf,
    line: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<R: BufRead> JsonlRecords<R> {
    pub fn new(reader: R, path: PathBuf) -> Self {
        Self { reader, path, line: 0, buf: Vec::new(), done: false }
    }
}

impl<R: BufRead> Iterator for JsonlRecords<R> {
    type Item = Result<RawRecord, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.buf.clear();
            match self.reader.read_until(b'\n', &mut self.buf) {
                Ok(0) => self.done = true,
                Ok(_) => {
                    self.line += 1;
                    let bytes = if self.line == 1 { strip_bom(&self.buf) } else { &self.buf };
                    if bytes.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let line = self.line;
                    let at = RowPosition::Line(line);
                    return Some(parse_object(bytes, &self.path, |_| line).map(|fields| RawRecord { at, fields }));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(io_error(&self.path, e)));
                }
            }
        }
        None
    }
}
