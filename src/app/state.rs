//! What the user chose, kept between sessions in eframe's storage (and injectable by tests).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::device::DeviceChoice;
use crate::model::FrozenPrecision;
use crate::train::{MethodKind, TrainConfig};

/// Recent-file lists keep this many entries.
const RECENT: usize = 8;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// HF folder or .gguf file.
    pub model_path: String,
    pub data_path: String,
    /// Run folder: events.jsonl, checkpoint/, model/.
    pub output_dir: String,
    /// Where the Save panel writes the (fine-tuned) model.
    pub save_dir: String,
    /// Also write delta.safetensors (the changed tensors only) beside the saved folder.
    pub save_delta: bool,
    /// Where the Save panel writes a GGUF file (with an Ollama Modelfile beside it), and in what.
    pub gguf_path: String,
    pub gguf_precision: crate::io::gguf::Precision,
    /// A past run's events.jsonl to reopen.
    pub run_log: String,
    pub device: DeviceChoice,
    pub method: MethodKind,
    pub rho: f64,
    /// GreenTrainer's budget instead of rho (`2.5wh`, `30g`, `600s`, `1e15flops`); empty: use rho.
    pub budget: String,
    /// GreenTrainer: run each batch's shared prompt prefix without gradient.
    pub frozen_prompt: bool,
    /// How the weights that do not train are stored (every method but full fine-tuning).
    pub frozen_precision: FrozenPrecision,
    pub top_k: usize,
    pub lora_rank: usize,
    pub max_len: usize,
    pub batch_size: usize,
    pub epochs: usize,
    /// 0: run all epochs.
    pub max_steps: usize,
    pub lr: f64,
    /// Share of the data file held out for the Evaluate panel.
    pub validation_fraction: f64,
    pub eval_rows: usize,
    pub max_new_tokens: usize,
    /// The Method tab's comparison: training rows, and held-out rows from the data file's end.
    pub compare_rows: usize,
    pub compare_held_out: usize,
    /// The Chat tab's sampling and system message.
    pub chat: crate::eval::chat::Sampling,
    pub chat_system: String,
    pub recent_models: Vec<String>,
    pub recent_data: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        let train = TrainConfig::quick();
        Self {
            model_path: crate::train::config::DEFAULT_MODEL.into(),
            data_path: train.data.display().to_string(),
            output_dir: "runs/app".into(),
            save_dir: "runs/app/saved-model".into(),
            save_delta: false,
            gguf_path: "runs/app/model.gguf".into(),
            gguf_precision: crate::io::gguf::Precision::Q8_0,
            run_log: "runs/app/events.jsonl".into(),
            device: DeviceChoice::Wgpu,
            method: MethodKind::Greentrainer,
            rho: train.rho,
            budget: String::new(),
            frozen_prompt: train.frozen_prompt,
            frozen_precision: train.frozen_precision,
            top_k: train.top_k,
            lora_rank: train.lora_rank,
            max_len: train.max_len,
            batch_size: train.batch_size,
            epochs: train.epochs,
            max_steps: 50,
            lr: train.lr,
            validation_fraction: 0.1,
            eval_rows: 4,
            max_new_tokens: 48,
            // About 12 steps per method at batch 4 and a dozen scored answers: minutes on a laptop.
            compare_rows: 48,
            compare_held_out: 12,
            chat: Default::default(),
            chat_system: String::new(),
            recent_models: Vec::new(),
            recent_data: Vec::new(),
        }
    }
}

impl Settings {
    /// The run these settings describe; the app saves the model from the Save panel, not here.
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            model: PathBuf::from(&self.model_path),
            data: PathBuf::from(&self.data_path),
            output: PathBuf::from(&self.output_dir),
            device: self.device,
            method: self.method,
            rho: self.rho,
            budget: self.budget_choice().and_then(Result::ok),
            frozen_prompt: self.frozen_prompt,
            frozen_precision: self.frozen_precision,
            top_k: self.top_k,
            lora_rank: self.lora_rank,
            epochs: self.epochs,
            max_steps: self.max_steps,
            batch_size: self.batch_size,
            max_len: self.max_len,
            lr: self.lr,
            save_model: false,
            ..TrainConfig::quick()
        }
    }
}

impl Settings {
    /// The Method tab's comparison at these settings: the base model, full fine-tuning,
    /// GreenTrainer at `rho`, FT-top-k at its FLOPs and LoRA, one epoch over the data file's first
    /// `compare_rows` rows, scored on its last `compare_held_out`.
    pub fn comparison(&self) -> crate::bench::accuracy::Settings {
        let data = PathBuf::from(&self.data_path);
        crate::bench::accuracy::Settings {
            model: PathBuf::from(&self.model_path),
            train: data.clone(),
            held_out: data,
            rhos: vec![self.rho],
            train_rows: self.compare_rows,
            epochs: 1,
            max_steps: 0,
            batch_size: self.batch_size,
            max_len: self.max_len,
            lr: self.lr,
            lora_lr_scale: crate::bench::accuracy::LORA_LR_SCALE,
            eval_rows: self.compare_held_out,
            answer_tokens: self.max_new_tokens,
            granularity: crate::train::Granularity::Tensor,
            frozen_prompt: self.frozen_prompt,
            reselect_every_steps: 0,
            importance_batches: 1,
            baselines: true,
            frozen_precisions: vec![self.frozen_precision],
        }
    }

    /// The GreenTrainer budget the user typed, parsed; `None` when rho is used instead.
    pub fn budget_choice(&self) -> Option<Result<crate::green::budget::Budget, String>> {
        (self.method == MethodKind::Greentrainer && !self.budget.trim().is_empty()).then(|| self.budget.parse())
    }
}

/// Puts `path` first in `list`, without duplicates.
pub fn remember(list: &mut Vec<String>, path: &str) {
    list.retain(|p| p != path);
    list.insert(0, path.to_owned());
    list.truncate(RECENT);
}
