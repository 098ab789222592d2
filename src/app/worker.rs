//! The one thread that owns the compute device and the loaded model. The UI sends commands and
//! polls replies each frame, so no frame ever waits on the engine.

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Instant;

use eframe::egui;

use crate::data::{Batch, ChatMessage, Example, IGNORE_INDEX, LoadOptions, Mapping, Preview, load_dataset, preview, split_by_ratio};
use crate::device::{ComputeDevice, DeviceChoice};
use crate::eval::chat::Sampling;
use crate::eval::runner::{EvalSettings, Evaluation, evaluate};
use crate::io::gguf::Precision;
use crate::io::gguf::export::{Exported, save_gguf};
use crate::io::summary::ModelSummary;
use crate::io::{LoadedModel, atomic::Existing, export::save_hf_folder, load_model, safetensors_file::write_f32};
use crate::model::{FrozenPrecision, Linears, Parameters};
use crate::profile::{OpSpec, profile};
use crate::train::batch::DeviceBatch;
use crate::train::events::read_log;
use crate::train::output::OutputMode;
use crate::train::step::forward_backward;
use crate::train::{Event, RunControl, RunOutcome, TrainConfig, Trainer};

/// Why a command failed, kept typed until the screen words it ([`Reply::Done`]).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Engine(#[from] crate::error::Error),
    #[error(transparent)]
    Data(#[from] crate::data::DataError),
    #[error(transparent)]
    Profile(#[from] crate::profile::ProfileError),
    /// What the user must do first (load a model, keep validation rows).
    #[error("{0}")]
    Needs(&'static str),
    /// The output exists; `tick` names the box that allows replacing it.
    #[error("{error}: tick \"{tick}\" to replace it")]
    Exists { error: crate::error::Error, tick: &'static str },
    /// Written, but what was written does not load again.
    #[error("{done}, but reloading failed: {error}")]
    Reload { done: &'static str, error: crate::error::Error },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: no events", .0.display())]
    EmptyLog(PathBuf),
    #[error("the device failed: {0}")]
    Device(String),
    /// An engine panic, caught so that it does not take the app down.
    #[error("internal error: {0}")]
    Panicked(String),
}

/// Replacing is refused unless the user ticked `tick`: say so on the error.
fn refused_replace(tick: &'static str) -> impl FnOnce(crate::error::Error) -> WorkerError {
    move |e| match e {
        crate::error::Error::Exists { .. } => WorkerError::Exists { error: e, tick },
        e => e.into(),
    }
}

const LOAD_MODEL_FIRST: &str = "load a model first (Model panel)";

/// Preview rows and histogram bins the Data panel shows.
const PREVIEW_ROWS: usize = 8;
const HISTOGRAM_BINS: usize = 24;
/// Tokens in the calibration batch: enough to occupy the device, small enough to be quick on a CPU.
const CALIBRATION_SEQ: usize = 64;
/// The delta file written beside a saved folder.
pub const DELTA_FILE: &str = "delta.safetensors";

/// A tensor as written to safetensors: name, shape, row-major values.
type NamedTensor = (String, Vec<usize>, Vec<f32>);

// Commands are sent once per user action, so the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    LoadModel {
        path: PathBuf,
        device: DeviceChoice,
        /// The setting the model is loaded for: under `source` a GGUF's quantized linear weights
        /// stay quantized (`io::load_model_stored`), so a model loads in about what it trains in.
        precision: FrozenPrecision,
    },
    Preview {
        path: PathBuf,
        max_len: usize,
        mapping: Option<Mapping>,
    },
    Train {
        config: TrainConfig,
        mapping: Option<Mapping>,
        validation_fraction: f64,
        resume: bool,
    },
    Evaluate {
        data: PathBuf,
        max_len: usize,
        mapping: Option<Mapping>,
        validation_fraction: f64,
        rows: usize,
        max_new_tokens: usize,
    },
    /// One reply of the loaded model to `tuned`, then of the base model (when training replaced
    /// the loaded one) to `base`: each side's own history, ending with the same user message.
    Chat {
        tuned: Vec<ChatMessage>,
        base: Vec<ChatMessage>,
        sampling: Sampling,
    },
    /// `delta`: also write the changed tensors beside `dir`, with this safetensors metadata.
    Save {
        dir: PathBuf,
        /// Whether an existing folder that holds files may be replaced.
        replace: bool,
        delta: Option<HashMap<String, String>>,
    },
    /// One GGUF file for llama.cpp, Ollama and LM Studio, and an Ollama Modelfile beside it.
    ExportGguf {
        path: PathBuf,
        precision: Precision,
        replace: bool,
    },
    OpenRun {
        log: PathBuf,
    },
    Calibrate {
        max_len: usize,
    },
    /// Train and score each method briefly (see [`crate::bench::accuracy`]).
    Compare {
        settings: crate::bench::accuracy::Settings,
    },
}

impl Command {
    fn label(&self) -> &'static str {
        match self {
            Command::LoadModel { .. } => "loading the model",
            Command::Preview { .. } => "reading the data",
            Command::Train { .. } => "training",
            Command::Evaluate { .. } => EVALUATING,
            Command::Chat { .. } => CHATTING,
            Command::Save { .. } => "saving",
            Command::ExportGguf { .. } => "exporting GGUF",
            Command::OpenRun { .. } => "opening the run",
            Command::Calibrate { .. } => CALIBRATING,
            Command::Compare { .. } => COMPARING,
        }
    }
}

/// The result of one command.
pub enum Output {
    Model {
        /// The path as the user gave it, which loaded.
        path: PathBuf,
        summary: ModelSummary,
        ops: Vec<OpSpec>,
        /// Bytes per weight of each linear weight `frozen_precision = source` keeps quantized.
        source_bytes: BTreeMap<String, f64>,
        device: String,
        note: Option<String>,
    },
    Preview(Preview),
    Trained(RunOutcome),
    /// `base`: the same rows on the model as loaded, once training changed it.
    Evaluated {
        tuned: Evaluation,
        base: Option<Evaluation>,
    },
    /// The replies in full (the same text the last [`Reply::ChatText`] of each side gave).
    Chatted {
        tuned: String,
        base: Option<String>,
    },
    Saved {
        dir: PathBuf,
        delta: Option<(PathBuf, usize)>,
    },
    ExportedGguf(Exported),
    Run {
        log: PathBuf,
        events: Vec<Event>,
    },
    Calibrated(Calibration),
    Compared(Vec<crate::bench::accuracy::Row>),
    /// The user cancelled the command (which left nothing behind).
    Cancelled,
}

/// One timed full fine-tuning pass, and what is known of the device's memory.
pub struct Calibration {
    pub seconds_per_flop: f64,
    /// Total memory of the device, when the backend can tell.
    pub device_memory: Option<u64>,
    /// What the memory pre-flight plans for (the backend and its binding limit).
    pub target: crate::train::memory::Target,
}

pub enum Reply {
    TrainEvent(Event),
    EvalProgress {
        done: usize,
        total: usize,
    },
    /// What the comparison of methods is doing now.
    CompareProgress(String),
    /// A chat reply so far.
    ChatText {
        side: ChatSide,
        text: String,
    },
    /// Exactly one per command.
    Done {
        task: &'static str,
        result: Result<Output, WorkerError>,
    },
}

/// The UI's handle on the worker thread.
pub struct Worker {
    tx: Sender<Command>,
    rx: Receiver<Reply>,
    /// The Cancel and Pause buttons' flags: the trainer obeys them between steps, the other
    /// commands check cancel between rows and passes.
    pub control: RunControl,
    /// Commands sent and not yet done, oldest first.
    pending: Vec<&'static str>,
}

impl Worker {
    pub fn spawn(ctx: egui::Context) -> Self {
        let (tx, commands) = channel();
        let (replies, rx) = channel();
        let control = RunControl::default();
        let engine = Engine { device: None, loaded: None, base: None, replies, ctx, control: control.clone() };
        std::thread::Builder::new().name("engine".into()).spawn(move || engine.serve(commands)).expect("cannot start the engine thread");
        Self { tx, rx, control, pending: Vec::new() }
    }

    pub fn send(&mut self, command: Command) {
        if matches!(
            command,
            Command::Train { .. } | Command::Compare { .. } | Command::Evaluate { .. } | Command::Chat { .. } | Command::Calibrate { .. }
        ) {
            self.control.reset();
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
pub const COMPARING: &str = "comparing methods";
pub const EVALUATING: &str = "evaluating";
pub const CHATTING: &str = "chatting";
pub const CALIBRATING: &str = "calibrating";

/// Which model a chat reply comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatSide {
    /// The loaded model, fine-tuned once training ran.
    Tuned,
    /// The model as loaded, kept after training replaced it.
    Base,
}

/// Lives on the worker thread.
struct Engine {
    device: Option<ComputeDevice>,
    /// The loaded model; after training, the fine-tuned one.
    loaded: Option<LoadedModel>,
    /// The model as loaded, kept once training replaced `loaded`: the baseline for Evaluate and
    /// the delta (a second copy of the weights in memory).
    base: Option<LoadedModel>,
    replies: Sender<Reply>,
    ctx: egui::Context,
    control: RunControl,
}

impl Engine {
    fn serve(mut self, commands: Receiver<Command>) {
        for command in commands {
            let task = command.label();
            // An engine panic must not take the app down: it becomes this command's error.
            let result = catch_unwind(AssertUnwindSafe(|| self.handle(command))).unwrap_or_else(|panic| {
                let what = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
                Err(WorkerError::Panicked(what.unwrap_or_else(|| "the engine panicked".into())))
            });
            self.reply(Reply::Done { task, result });
        }
    }

    fn reply(&self, reply: Reply) {
        let _ = self.replies.send(reply);
        self.ctx.request_repaint();
    }

    fn model(&self) -> Result<&LoadedModel, WorkerError> {
        self.loaded.as_ref().ok_or(WorkerError::Needs(LOAD_MODEL_FIRST))
    }

    fn device(&self) -> Result<&ComputeDevice, WorkerError> {
        self.device.as_ref().ok_or(WorkerError::Needs(LOAD_MODEL_FIRST))
    }

    fn handle(&mut self, command: Command) -> Result<Output, WorkerError> {
        match command {
            Command::LoadModel { path, device, precision } => {
                let device = ComputeDevice::open(device);
                let loaded = crate::io::load_model_stored(&path, &device.device, precision)?;
                let ops = loaded.model.op_graph();
                let out = Output::Model {
                    path: path.clone(),
                    summary: ModelSummary::of(&loaded),
                    source_bytes: crate::io::source_bytes(&path, &ops),
                    ops,
                    device: device.name.clone(),
                    note: device.fallback_reason.clone(),
                };
                self.device = Some(device);
                self.loaded = Some(loaded);
                self.base = None;
                Ok(out)
            }
            Command::Preview { path, max_len, mapping } => {
                let loaded = self.model()?;
                let opts = LoadOptions { mapping, ..loaded.load_options(max_len)? };
                Ok(Output::Preview(preview(&path, &loaded.tokenizer, &opts, PREVIEW_ROWS, HISTOGRAM_BINS)?))
            }
            Command::Train { config, mapping, validation_fraction, resume } => self.train(config, mapping, validation_fraction, resume),
            Command::Evaluate { data, max_len, mapping, validation_fraction, rows, max_new_tokens } => {
                let loaded = self.model()?;
                // The same evaluation as `greentrainer eval --max-len L --max-new-tokens N` on these rows.
                let settings = EvalSettings::greedy(max_new_tokens, max_len);
                let opts = settings.load_options(loaded)?;
                let (_, mut validation) = split(loaded, &data, LoadOptions { mapping, ..opts }, validation_fraction)?;
                if validation.is_empty() {
                    return Err(WorkerError::Needs("no validation rows: raise the validation share in the Data panel"));
                }
                validation.truncate(rows.max(1));
                let generation = settings.generation(loaded);
                let replies = self.replies.clone();
                let ctx = self.ctx.clone();
                // With a base model each row is generated twice; progress counts both passes.
                let passes = if self.base.is_some() { 2 } else { 1 };
                let control = &self.control;
                let progress = |offset: usize| {
                    let (replies, ctx) = (replies.clone(), ctx.clone());
                    move |done: usize, total: usize| {
                        let _ = replies.send(Reply::EvalProgress { done: offset + done, total: total * passes });
                        ctx.request_repaint();
                        !control.cancelled()
                    }
                };
                let rouge = settings.rouge();
                let evaluated = evaluate(loaded, &validation, &generation, &rouge, &mut progress(0)).and_then(|tuned| {
                    let base = match &self.base {
                        Some(base) => Some(evaluate(base, &validation, &generation, &rouge, &mut progress(validation.len()))?),
                        None => None,
                    };
                    Ok(Output::Evaluated { tuned, base })
                });
                cancellable(evaluated)
            }
            Command::Chat { tuned, base, sampling } => {
                let tuned_reply = self.chat_reply(self.model()?, &tuned, &sampling, ChatSide::Tuned)?;
                // Stop ends the exchange: the base model does not start after it.
                let base_reply = match &self.base {
                    Some(model) if !self.control.cancelled() => Some(self.chat_reply(model, &base, &sampling, ChatSide::Base)?),
                    _ => None,
                };
                Ok(Output::Chatted { tuned: tuned_reply, base: base_reply })
            }
            Command::Save { dir, replace, delta } => {
                let loaded = self.model()?;
                // Computed first, so a delta that cannot be written leaves nothing half done.
                let changed = match &delta {
                    Some(_) => Some(self.changed_tensors()?),
                    None => None,
                };
                let existing = if replace { Existing::Replace } else { Existing::Refuse };
                save_hf_folder(loaded, &dir, existing, None).map_err(refused_replace("Replace the model folder"))?;
                // The self-check: what was written must load again.
                load_model(&dir, &self.device()?.device).map_err(|error| WorkerError::Reload { done: "saved", error })?;
                let delta = match (changed, delta) {
                    (Some(tensors), Some(metadata)) => Some(write_delta(&dir, &tensors, metadata)?),
                    _ => None,
                };
                Ok(Output::Saved { dir, delta })
            }
            Command::ExportGguf { path, precision, replace } => {
                let loaded = self.model()?;
                let existing = if replace { Existing::Replace } else { Existing::Refuse };
                let done = save_gguf(loaded, &path, precision, existing).map_err(refused_replace("Replace"))?;
                load_model(&path, &self.device()?.device).map_err(|error| WorkerError::Reload { done: "written", error })?;
                Ok(Output::ExportedGguf(done))
            }
            Command::OpenRun { log } => {
                let events = read_log(&log)?;
                if events.is_empty() {
                    return Err(WorkerError::EmptyLog(log));
                }
                Ok(Output::Run { log, events })
            }
            Command::Calibrate { max_len } => Ok(self.calibrate(max_len)?.map_or(Output::Cancelled, Output::Calibrated)),
            Command::Compare { settings } => {
                let device = self.device()?.clone();
                let mut progress = |what: &str| self.reply(Reply::CompareProgress(what.to_string()));
                cancellable(crate::bench::accuracy::run(&settings, &device, &mut progress, &self.control).map(Output::Compared))
            }
        }
    }

    /// Times one forward+backward pass of full fine-tuning on a random batch and divides by its
    /// FLOPs. A warm-up pass first, so kernel compilation and allocation are not timed.
    /// None when cancelled (between the warm-up and the timed pass, or after the latter).
    fn calibrate(&self, max_len: usize) -> Result<Option<Calibration>, WorkerError> {
        let loaded = self.model()?;
        let device = self.device()?;
        let seq = max_len.clamp(2, CALIBRATION_SEQ);
        let vocab = loaded.model.info().vocab_size as u64;
        // A fixed LCG: any tokens cost the same, and the pass stays reproducible.
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let input_ids: Vec<u32> = (0..seq)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((state >> 33) % vocab) as u32
            })
            .collect();
        // The second half is the target (for an encoder-decoder model, the decoder's input).
        let batch = Batch {
            labels: input_ids.iter().enumerate().map(|(i, &t)| if i < seq / 2 { IGNORE_INDEX } else { t as i64 }).collect(),
            attention_mask: vec![1; seq],
            input_ids,
            batch: 1,
            seq,
            real_tokens: seq,
            target_tokens: seq,
        };
        let on_device = DeviceBatch::new(&batch, &loaded.model);
        let pass = || {
            forward_backward(&loaded.model, &|_| true, &on_device)?;
            device.device.sync().map_err(|e| WorkerError::Device(format!("{e:?}")))
        };
        let cancelled = || self.control.cancelled();
        pass()?;
        if cancelled() {
            return Ok(None);
        }
        let start = Instant::now();
        pass()?;
        let seconds = start.elapsed().as_secs_f64();
        if cancelled() {
            return Ok(None);
        }
        let flops = crate::profile::FLOPS_PER_MAC * profile(&loaded.model.op_graph(), on_device.shape, false)?.t_full();
        Ok(Some(Calibration {
            seconds_per_flop: seconds / flops.max(1.0),
            device_memory: crate::green::device_memory(device),
            target: crate::train::memory::Target::of(device),
        }))
    }

    /// `model`'s reply to `history`, streamed to the UI as it grows; the Stop button ends it there.
    fn chat_reply(&self, model: &LoadedModel, history: &[ChatMessage], sampling: &Sampling, side: ChatSide) -> Result<String, WorkerError> {
        let mut on_text = |text: &str| {
            self.reply(Reply::ChatText { side, text: text.to_string() });
            !self.control.cancelled()
        };
        Ok(crate::eval::chat::reply(model, history, sampling, &mut on_text)?)
    }

    /// The fine-tuned tensors (HF names, merged) that differ from the base model's. A tensor the
    /// run kept frozen in low precision (`frozen_precision`) is compared with the base's values in
    /// that type, so rounding alone is no change.
    fn changed_tensors(&self) -> Result<Vec<NamedTensor>, WorkerError> {
        let base = self.base.as_ref().ok_or(WorkerError::Needs("nothing to write as a delta: no training has changed the model yet"))?;
        let mut before = HashMap::new();
        base.model.merged().visit(&mut |name, p| {
            before.insert(name.to_string(), p.stored());
        });
        let mut changed = Vec::new();
        self.model()?.model.merged().visit(&mut |name, p| {
            // Still in its file's blocks: never trained.
            if p.is_quantized() {
                return;
            }
            let values = p.to_vec();
            let base_values = before.get(name).and_then(|b| b.to_float().cast(p.dtype()).try_to_vec_as::<f32>().ok());
            if base_values.as_ref() != Some(&values) {
                changed.push((name.to_string(), p.shape(), values));
            }
        });
        if changed.is_empty() {
            return Err(WorkerError::Needs("nothing to write as a delta: no tensor differs from the base model"));
        }
        Ok(changed)
    }

    /// The base model in memory (the one loaded before any training in this session) when the run
    /// starts from its file and stores frozen weights in low precision: it is stored so first,
    /// and the run shares those tensors rather than loading a second copy (the base then answers
    /// chats and evaluations with them, as stored). Only a base still holding the file's values
    /// (every matrix f32) or already stored in the run's type is shared, so no run starts from
    /// values rounded twice. `None`: the run loads the file itself.
    fn base_for(&mut self, config: &TrainConfig, device: &ComputeDevice) -> Option<LoadedModel> {
        let frozen = config.frozen_precision.storage(&device.device);
        // `source` keeps quantized weights whatever the float type of the rest.
        let stored_low = frozen != burn::tensor::DType::F32 || config.frozen_precision == FrozenPrecision::Source;
        if !stored_low || config.method == crate::train::MethodKind::Full || config.validate().is_err() {
            return None;
        }
        let base = if self.base.is_some() { self.base.as_mut() } else { self.loaded.as_mut() }?;
        let same = crate::io::same_path(base.source.path(), &config.model);
        let mut unrounded = true;
        base.model.visit(&mut |_, p| {
            if p.is_matrix() {
                unrounded &= p.dtype() == burn::tensor::DType::F32 || p.dtype() == frozen;
            }
        });
        if !same || !unrounded {
            return None;
        }
        let store = crate::io::frozen_store(config.frozen_precision, &config.model, &base.model, &device.device).ok()?;
        crate::model::precision::store_frozen(&mut base.model, &store, &|_| false);
        Some(base.clone())
    }

    fn train(
        &mut self,
        config: TrainConfig,
        mapping: Option<Mapping>,
        validation_fraction: f64,
        resume: bool,
    ) -> Result<Output, WorkerError> {
        let device = self.device()?.clone();
        let mut trainer = match self.base_for(&config, &device) {
            Some(base) => Trainer::prepare_loaded(config.clone(), device, base)?,
            None => Trainer::prepare(config.clone(), device)?,
        };
        // The app holds out a validation share and may remap columns, so the examples are
        // re-read with its options; the split is seeded, so a resumed run sees the same rows.
        let opts = trainer.loaded.load_options(config.max_len)?;
        let (train, _) = split(&trainer.loaded, &config.data, LoadOptions { mapping, ..opts }, validation_fraction)?;
        if train.is_empty() {
            return Err(WorkerError::Needs("no training rows left after the validation split"));
        }
        trainer.examples = train;
        let mode = if resume { OutputMode::Resume } else { OutputMode::New };
        let mut log = crate::train::output::open(&config, mode)?;
        let replies = self.replies.clone();
        let ctx = self.ctx.clone();
        let mut sink = |e: &Event| {
            crate::train::EventSink::emit(&mut log, e);
            let _ = replies.send(Reply::TrainEvent(e.clone()));
            ctx.request_repaint();
        };
        let outcome = trainer.run(&mut sink, &self.control, resume)?;
        // Evaluate and Save now work on the fine-tuned weights; the first run keeps the loaded
        // model as the base to compare with.
        let before = self.loaded.replace(trainer.loaded);
        if self.base.is_none() {
            self.base = before;
        }
        Ok(Output::Trained(outcome))
    }
}

/// Writes `tensors` as delta.safetensors beside `dir`, through a temporary file.
fn write_delta(dir: &Path, tensors: &[NamedTensor], mut metadata: HashMap<String, String>) -> Result<(PathBuf, usize), WorkerError> {
    let path = dir.parent().unwrap_or(Path::new(".")).join(DELTA_FILE);
    let partial = path.with_extension("safetensors.partial");
    metadata.insert("format".into(), "pt".into());
    metadata.insert("values".into(), "fine-tuned tensors that differ from the base model (replace, not add)".into());
    write_f32(&partial, tensors, Some(metadata))?;
    std::fs::rename(&partial, &path).map_err(|source| WorkerError::Io { path: path.clone(), source })?;
    Ok((path, tensors.len()))
}

/// (train, validation) examples of a data file read with `opts`, split with the trainer's seed.
fn split(loaded: &LoadedModel, path: &Path, opts: LoadOptions, fraction: f64) -> Result<(Vec<Example>, Vec<Example>), WorkerError> {
    let data = load_dataset(path, &loaded.tokenizer, &opts)?;
    data.require_targets()?;
    Ok(split_by_ratio(data.examples, fraction, TrainConfig::default().seed)?)
}

/// A command's result, with a cancel the user asked for as [`Output::Cancelled`] rather than an
/// error.
fn cancellable(result: crate::error::Result<Output>) -> Result<Output, WorkerError> {
    match result {
        Err(crate::error::Error::Cancelled) => Ok(Output::Cancelled),
        other => Ok(other?),
    }
}
