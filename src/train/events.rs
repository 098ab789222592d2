//! The engine's one event stream: it feeds the CLI progress bar, the JSONL log next to a run's
//! output and the app alike. A run folder's events.jsonl is enough to redraw its plots.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// FLOPs are reported as 2 x multiply-accumulates; the paper's convention is MACs (divide by 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        method: String,
        model: String,
        device: String,
        parameters: usize,
        train_examples: usize,
        total_steps: usize,
        /// Rows whose source (or target) was cut to fit max_len.
        truncated_rows: usize,
        /// FLOPs of one full fine-tuning step at the run's batch shape (padded tokens).
        full_step_flops: f64,
        resumed_from_step: Option<usize>,
    },
    /// GreenTrainer scores importance before selecting: forward+backward pass `pass` (from 0)
    /// of `passes` is about to run.
    Scoring {
        step: usize,
        pass: usize,
        passes: usize,
    },
    Selection {
        step: usize,
        selected: Vec<String>,
        /// Deepest selected tensor: the backward pass stops there.
        deepest: Option<String>,
        /// (T_fp + bp(m)) / T_full with unrounded costs.
        realised_rho: f64,
        /// The same for the modelled step time, which counts each trained parameter's update too
        /// (`train::cost::step_time_share`); also held within rho.
        #[serde(default)]
        time_rho: f64,
        /// Normalised importance per scored tensor.
        importance: Vec<(String, f64)>,
        /// FLOPs spent on scoring (two forward+backward passes).
        importance_flops: f64,
        added: Vec<String>,
        removed: Vec<String>,
    },
    Step {
        step: usize,
        epoch: u64,
        loss: f64,
        lr: f64,
        tokens: usize,
        step_time_s: f64,
        /// Cumulative FLOPs spent by this run (training steps plus importance scoring).
        flops_spent: f64,
        /// Cumulative FLOPs full fine-tuning would have spent on the same batches.
        flops_full: f64,
    },
    Checkpoint {
        step: usize,
        path: PathBuf,
    },
    Finished {
        steps: usize,
        flops_spent: f64,
        flops_full: f64,
        wall_time_s: f64,
        final_loss: Option<f64>,
        optimizer_state_bytes: usize,
        output: Option<PathBuf>,
    },
    /// Time, energy and CO2 of the run, emitted just before `Finished`.
    Energy(crate::green::Footprint),
    Cancelled {
        step: usize,
        checkpoint: PathBuf,
    },
}

/// Anything that consumes events.
pub trait EventSink {
    fn emit(&mut self, event: &Event);
}

impl<F: FnMut(&Event)> EventSink for F {
    fn emit(&mut self, event: &Event) {
        self(event)
    }
}

/// Appends one JSON object per line, flushed per event so a crash loses nothing already said.
pub struct JsonlLog {
    file: File,
    path: PathBuf,
}

impl JsonlLog {
    pub fn append(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self { file, path: path.to_path_buf() })
    }
}

impl EventSink for JsonlLog {
    fn emit(&mut self, event: &Event) {
        let line = serde_json::to_string(event).unwrap_or_default();
        if let Err(e) = writeln!(self.file, "{line}").and_then(|_| self.file.flush()) {
            tracing::warn!("cannot append to {}: {e}", self.path.display());
        }
    }
}

/// Reads a run's event log back (the app reopens past runs from it). A truncated last line from
/// a crash is skipped.
pub fn read_log(path: &Path) -> Result<Vec<Event>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut events = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(path, e))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(e) => events.push(e),
            Err(e) => tracing::warn!("{}:{}: skipping unreadable event: {e}", path.display(), i + 1),
        }
    }
    Ok(events)
}
