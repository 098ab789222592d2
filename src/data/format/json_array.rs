//! A top-level JSON array of objects, streamed element by element.
//!
//! A small scanner finds where each element of the outer array starts and ends (it tracks
//! bracket depth and strings, nothing more) and hands that slice to serde_json. So only one
//! element is in memory at a time, an error carries the file's own line number, and a
//! malformed element is a row error that `skip_bad_rows` can step over. Only a broken
//! outer structure (no `[`, a stray comma, an unclosed array) is fatal.

use std::io::Read;
use std::path::PathBuf;

use super::{RawRecord, io_error, parse_object};
use crate::data::error::{DataError, RowPosition};

const CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, PartialEq)]
enum State {
    BeforeArray,
    ExpectElement { first: bool },
    AfterArray,
    Done,
}

pub struct JsonArrayRecords<R> {
    reader: R,
    path: PathBuf,
    chunk: Vec<u8>,
    pos: usize,
    /// Line of the byte `next_byte` returns next (1-based).
    line: u64,
    array_line: u64,
    state: State,
}

impl<R: Read> JsonArrayRecords<R> {
    pub fn new(reader: R, path: PathBuf) -> Self {
        Self { reader, path, chunk: Vec::new(), pos: 0, line: 1, array_line: 1, state: State::BeforeArray }
    }

    fn next_byte(&mut self) -> Result<Option<u8>, DataError> {
        if self.pos == self.chunk.len() {
            self.chunk.resize(CHUNK, 0);
            let n = self.reader.read(&mut self.chunk).map_err(|e| io_error(&self.path, e))?;
            self.chunk.truncate(n);
            self.pos = 0;
            if n == 0 {
                return Ok(None);
            }
        }
        let b = self.chunk[self.pos];
        self.pos += 1;
        if b == b'\n' {
            self.line += 1;
        }
        Ok(Some(b))
    }

    /// The next byte that is not JSON whitespace, and the line it sits on.
    fn next_significant(&mut self) -> Result<Option<(u8, u64)>, DataError> {
        while let Some(b) = self.next_byte()? {
            if !matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
                return Ok(Some((b, self.line)));
            }
        }
        Ok(None)
    }

    fn structure_error(&mut self, line: u64, message: impl Into<String>) -> DataError {
        self.state = State::Done;
        DataError::JsonStructure { path: self.path.clone(), at: RowPosition::Line(line), message: message.into() }
    }

    /// Reads the rest of an element whose first byte is `first`; returns its bytes and
    /// whether the outer array closed right after it.
    fn read_element(&mut self, first: u8) -> Result<(Vec<u8>, bool), DataError> {
        let mut element = vec![first];
        let mut depth: usize = usize::from(matches!(first, b'{' | b'['));
        let mut in_string = first == b'"';
        let mut escaped = false;
        while let Some(b) = self.next_byte()? {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
            } else {
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b']' if depth == 0 => return Ok((element, true)),
                    b',' if depth == 0 => return Ok((element, false)),
                    b'}' | b']' => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
            element.push(b);
        }
        let line = self.array_line;
        Err(self.structure_error(line, "the array that opens here is never closed"))
    }
}

impl<R: Read> Iterator for JsonArrayRecords<R> {
    type Item = Result<RawRecord, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.state == State::Done {
                return None;
            }
            let next = match self.next_significant() {
                Ok(next) => next,
                Err(e) => {
                    self.state = State::Done;
                    return Some(Err(e));
                }
            };
            match (self.state, next) {
                (State::Done, _) => return None,
                (State::BeforeArray, Some((b'[', line))) => {
                    self.array_line = line;
                    self.state = State::ExpectElement { first: true };
                }
                // A BOM is three bytes that only the first position may hold.
                (State::BeforeArray, Some((0xEF, 1))) => {
                    for _ in 0..2 {
                        if let Err(e) = self.next_byte() {
                            self.state = State::Done;
                            return Some(Err(e));
                        }
                    }
                }
                (State::BeforeArray, Some((_, line))) => {
                    return Some(Err(self.structure_error(line, "expected `[` to open the array")));
                }
                (State::BeforeArray | State::AfterArray, None) => {
                    self.state = State::Done;
                    return None;
                }
                (State::ExpectElement { first: true }, Some((b']', _))) => {
                    self.state = State::AfterArray;
                }
                (State::ExpectElement { .. }, Some((b @ (b']' | b','), line))) => {
                    let what = if b == b']' { "`]` right after a comma" } else { "a comma" };
                    return Some(Err(self.structure_error(line, format!("{what} where an element should be"))));
                }
                (State::ExpectElement { .. }, Some((b, start_line))) => {
                    let (bytes, closed) = match self.read_element(b) {
                        Ok(read) => read,
                        Err(e) => {
                            self.state = State::Done;
                            return Some(Err(e));
                        }
                    };
                    self.state = if closed { State::AfterArray } else { State::ExpectElement { first: false } };
                    let at = RowPosition::Line(start_line);
                    return Some(parse_object(&bytes, &self.path, |l| start_line + l as u64 - 1).map(|fields| RawRecord { at, fields }));
                }
                (State::ExpectElement { .. }, None) => {
                    let line = self.array_line;
                    return Some(Err(self.structure_error(line, "the array that opens here is never closed")));
                }
                (State::AfterArray, Some((_, line))) => {
                    return Some(Err(self.structure_error(line, "unexpected text after the array")));
                }
            }
        }
    }
}
