//! The one thread that owns the compute device and the loaded model. The UI sends commands and
//! polls replies each frame, so no frame ever waits on the engine.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};

use eframe::egui;

use crate::data::{Example, LoadOptions, Mapping, Preview, load_dataset, preview, split_by_ratio};
use crate::device::{ComputeDevice, DeviceChoice};
use crate::eval::generate::{GenerateOptions, Strategy, generate};
use crate::eval::rouge::RougeOptions;
use crate::eval::runner::{Evaluation, evaluate};
use crate::io::{LoadedModel, export::save_hf_folder, load_model};
use crate::model::summary::ModelSummary;
use crate::profile::OpSpec;
use crate::train::events::read_log;
use crate::train::{Event, JsonlLog, RunOutcome, TrainConfig, Trainer};

/// Preview rows and histogram bins the Data panel shows.
const PREVIEW_ROWS: usize = 8;
const HISTOGRAM_BINS: usize = 24;

pub enum Command {
    LoadModel { path: PathBuf, device: DeviceChoice },
    Preview { path: PathBuf, max_len: usize, mapping: Option<Mapping> },
    Train { config: TrainConfig, mapping: Option<Mapping>, validation_fraction: f64, resume: bool },
    Evaluate { data: PathBuf, max_len: usize, mapping: Option<Mapping>, validation_fraction: f64, rows: usize, max_new_tokens: usize },
    Generate { prompt: String, max_new_tokens: usize },
    Save { dir: PathBuf },
    OpenRun { log: PathBuf },
}

impl Command {
    fn label(&self) -> &'static str {
        match self {
            Command::LoadModel { .. } => "loading the model",
            Command::Preview { .. } => "reading the data",
            Command::Train { .. } => "training",
            Command::Evaluate { .. } => "evaluating",
            Command::Generate { .. } => "generating",
            Command::Save { .. } => "saving",
            Command::OpenRun { .. } => "opening the run",
        }
    }
}

/// The result of one command.
pub enum Output {
    Model { summary: ModelSummary, ops: Vec<OpSpec>, device: String, note: Option<String> },
    Preview(Preview),
    Trained(RunOutcome),
    Evaluated(Evaluation),
    Generated(String),
    Saved(PathBuf),
    Run { log: PathBuf, events: Vec<Event> },
}

pub enum Reply {
    TrainEvent(Event),
    EvalProgress { done: usize, total: usize },
    /// Exactly one per command.
    Done { task: &'static str, result: Result<Output, String> },
}

/// The UI's handle on the worker thread.
pub struct Worker {
    tx: Sender<Command>,
    rx: Receiver<Reply>,
    /// Set by the Cancel button; the trainer checks it after every step.
    pub cancel: Arc<AtomicBool>,
    /// Commands sent and not yet done, oldest first.
    pending: Vec<&'static str>,
}

impl Worker {
    pub fn spawn(ctx: egui::Context) -> Self {
        let (tx, commands) = channel();
        let (replies, rx) = channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        std::thread::Builder::new()
            .name("engine".into())
            .spawn(move || Engine { device: None, loaded: None, replies, ctx, cancel: flag }.serve(commands))
            .expect("cannot start the engine thread");
        Self { tx, rx, cancel, pending: Vec::new() }
    }

    pub fn send(&mut self, command: Command) {
        if matches!(command, Command::Train { .. }) {
            self.cancel.store(false, Ordering::Relaxed);
        }
        self.pending.push(command.label());
        // The thread lives as long as the sender, so sending cannot fail.
        let _ = self.tx.send(command);
    }

    /// Replies that arrived since the last frame.
    pub fn poll(&mut self) -> Vec<Reply> {
        let replies: Vec<Reply> = self.rx.try_iter().collect();
        for r in &replies {
            if let Reply::Done { task, .. } = r
                && let Some(i) = self.pending.iter().position(|p| p == task)
            {
                self.pending.remove(i);
            }
        }
        replies
    }

    /// What the worker is doing now, if anything.
    pub fn busy(&self) -> Option<&'static str> {
        self.pending.first().copied()
    }

    pub fn is_busy_with(&self, task: &str) -> bool {
        self.pending.contains(&task)
    }
}

pub const TRAINING: &str = "training";

/// Lives on the worker thread.
struct Engine {
    device: Option<ComputeDevice>,
    /// The loaded model; after training, the fine-tuned one.
    loaded: Option<LoadedModel>,
    replies: Sender<Reply>,
    ctx: egui::Context,
    cancel: Arc<AtomicBool>,
}

impl Engine {
    fn serve(mut self, commands: Receiver<Command>) {
        for command in commands {
            let task = command.label();
            // An engine panic must not take the app down: it becomes this command's error.
            let result = catch_unwind(AssertUnwindSafe(|| self.handle(command))).unwrap_or_else(|panic| {
                let what = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                Err(format!("internal error: {}", what.unwrap_or_else(|| "the engine panicked".into())))
            });
            self.reply(Reply::Done { task, result });
        }
    }

    fn reply(&self, reply: Reply) {
        let _ = self.replies.send(reply);
        self.ctx.request_repaint();
    }

    fn model(&self) -> Result<&LoadedModel, String> {
        self.loaded.as_ref().ok_or_else(|| "load a model first (Model panel)".to_string())
    }

    fn handle(&mut self, command: Command) -> Result<Output, String> {
        match command {
            Command::LoadModel { path, device } => {
                let device = ComputeDevice::open(device);
                let loaded = load_model(&path, &device.device).map_err(|e| e.to_string())?;
                let out = Output::Model {
                    summary: ModelSummary::of(&loaded),
                    ops: loaded.model.op_graph(),
                    device: device.name.clone(),
                    note: device.fallback_reason.clone(),
                };
                self.device = Some(device);
                self.loaded = Some(loaded);
                Ok(out)
            }
            Command::Preview { path, max_len, mapping } => {
                let loaded = self.model()?;
                let opts = LoadOptions { mapping, ..LoadOptions::new(max_len, eos(loaded)?) };
                preview(&path, &loaded.tokenizer, &opts, PREVIEW_ROWS, HISTOGRAM_BINS).map(Output::Preview).map_err(|e| e.to_string())
            }
            Command::Train { config, mapping, validation_fraction, resume } => self.train(config, mapping, validation_fraction, resume),
            Command::Evaluate { data, max_len, mapping, validation_fraction, rows, max_new_tokens } => {
                let loaded = self.model()?;
                let (_, mut validation) = split(loaded, &data, max_len, mapping, validation_fraction)?;
                if validation.is_empty() {
                    return Err("no validation rows: raise the validation share in the Data panel".into());
                }
                validation.truncate(rows.max(1));
                let generation = GenerateOptions { eos_token_ids: loaded.eos_token_ids(), ..GenerateOptions::greedy(max_new_tokens) };
                let replies = self.replies.clone();
                let ctx = self.ctx.clone();
                let mut progress = |done, total| {
                    let _ = replies.send(Reply::EvalProgress { done, total });
                    ctx.request_repaint();
                };
                evaluate(loaded, &validation, &generation, &RougeOptions::default(), &mut progress).map(Output::Evaluated).map_err(|e| e.to_string())
            }
            Command::Generate { prompt, max_new_tokens } => {
                let loaded = self.model()?;
                let ids = loaded.tokenizer.encode(prompt.as_str(), false).map_err(|e| format!("cannot tokenize the prompt: {e}"))?;
                if ids.get_ids().is_empty() {
                    return Err("type a prompt first".into());
                }
                let opts = GenerateOptions { strategy: Strategy::Greedy, eos_token_ids: loaded.eos_token_ids(), ..GenerateOptions::greedy(max_new_tokens) };
                let out = generate(&loaded.model, ids.get_ids(), &opts);
                loaded.tokenizer.decode(&out, true).map(Output::Generated).map_err(|e| format!("cannot decode: {e}"))
            }
            Command::Save { dir } => {
                let loaded = self.model()?;
                save_hf_folder(loaded, &dir, None).map_err(|e| e.to_string())?;
                // The self-check: what was written must load again.
                let device = self.device.as_ref().map(|d| d.device.clone()).ok_or("no device")?;
                load_model(&dir, &device).map_err(|e| format!("saved, but reloading failed: {e}"))?;
                Ok(Output::Saved(dir))
            }
            Command::OpenRun { log } => {
                let events = read_log(&log).map_err(|e| e.to_string())?;
                if events.is_empty() {
                    return Err(format!("{}: no events", log.display()));
                }
                Ok(Output::Run { log, events })
            }
        }
    }

    fn train(&mut self, config: TrainConfig, mapping: Option<Mapping>, validation_fraction: f64, resume: bool) -> Result<Output, String> {
        let device = self.device.clone().ok_or("load a model first (Model panel)")?;
        let mut trainer = Trainer::prepare(config.clone(), device).map_err(|e| e.to_string())?;
        // The app holds out a validation share and may remap columns, so the examples are
        // re-read with its options; the split is seeded, so a resumed run sees the same rows.
        let (train, _) = split(&trainer.loaded, &config.data, config.max_len, mapping, validation_fraction)?;
        if train.is_empty() {
            return Err("no training rows left after the validation split".into());
        }
        trainer.examples = train;
        let events_path = config.events_path();
        if !resume {
            let _ = std::fs::remove_file(&events_path);
        }
        let mut log = JsonlLog::append(&events_path).map_err(|e| e.to_string())?;
        let replies = self.replies.clone();
        let ctx = self.ctx.clone();
        let mut sink = |e: &Event| {
            crate::train::EventSink::emit(&mut log, e);
            let _ = replies.send(Reply::TrainEvent(e.clone()));
            ctx.request_repaint();
        };
        let outcome = trainer.run(&mut sink, &self.cancel, resume).map_err(|e| e.to_string())?;
        // Evaluate and Save now work on the fine-tuned weights.
        self.loaded = Some(trainer.loaded);
        Ok(Output::Trained(outcome))
    }
}

fn eos(loaded: &LoadedModel) -> Result<u32, String> {
    loaded.eos_token_ids().first().copied().ok_or_else(|| "the model defines no eos_token_id".to_string())
}

/// (train, validation) examples of a data file, split with the trainer's seed.
fn split(loaded: &LoadedModel, path: &Path, max_len: usize, mapping: Option<Mapping>, fraction: f64) -> Result<(Vec<Example>, Vec<Example>), String> {
    let opts = LoadOptions { mapping, ..LoadOptions::new(max_len, eos(loaded)?) };
    let data = load_dataset(path, &loaded.tokenizer, &opts).map_err(|e| e.to_string())?;
    data.require_targets().map_err(|e| e.to_string())?;
    split_by_ratio(data.examples, fraction, TrainConfig::default().seed).map_err(|e| e.to_string())
}
