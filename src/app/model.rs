//! Model tab: pick an HF folder or a GGUF file and the device, load it, show its summary; or
//! pick one of the models already on this computer (Ollama, LM Studio, the Hugging Face cache).

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, TryRecvError, channel};

use eframe::egui;

use super::StudioApp;
use super::widgets::{self, Pick, path_row};
use super::worker::Command;
use crate::device::DeviceChoice;
use crate::io::discover::{Format, FoundModel, Stores, discover};
use crate::io::summary::ModelSummary;
use crate::profile::OpSpec;

#[derive(Default)]
pub struct ModelView {
    pub summary: Option<ModelSummary>,
    /// The model's ops in execution order: what the Method and Tensors tabs cost and draw.
    pub ops: Vec<OpSpec>,
    /// Bytes per weight of each linear weight `frozen_precision = source` keeps quantized (the
    /// pre-flight's estimate of that setting).
    pub source_bytes: std::collections::BTreeMap<String, f64>,
    pub device: String,
    /// Why the device fell back to the CPU, if it did.
    pub note: Option<String>,
    /// Whether Browse… asks for a .gguf file rather than an HF folder.
    gguf: bool,
    found: Found,
}

/// The models already on this computer. Listing reads headers only, but a store on a slow disk
/// can still take a moment, so it runs on a thread of its own rather than in a frame.
#[derive(Default)]
struct Found {
    /// Where to look; `None`: where this user's programs keep models (tests point elsewhere).
    stores: Option<Stores>,
    /// `None` until the first scan ends.
    models: Option<Vec<FoundModel>>,
    scanning: Option<Receiver<Vec<FoundModel>>>,
}

impl Found {
    fn scan(&mut self, ctx: &egui::Context) {
        let stores = self.stores.clone().unwrap_or_else(Stores::from_env);
        let (tx, rx) = channel();
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            // The window may have closed meanwhile; then nobody waits for the list.
            let _ = tx.send(discover(&stores));
            ctx.request_repaint();
        });
        self.scanning = Some(rx);
    }

    fn poll(&mut self) {
        let Some(rx) = &self.scanning else {
            return;
        };
        match rx.try_recv() {
            Ok(models) => self.models = Some(models),
            // The scan thread died: show what is known (nothing) rather than scan forever.
            Err(TryRecvError::Disconnected) => self.models = Some(self.models.take().unwrap_or_default()),
            Err(TryRecvError::Empty) => return,
        }
        self.scanning = None;
    }
}

impl StudioApp {
    /// Lists the models of these stores instead of this user's (tests use fake stores).
    pub fn look_for_models_in(&mut self, stores: Stores) {
        self.model.found = Found { stores: Some(stores), ..Found::default() };
    }
}

impl ModelView {
    pub fn loaded(&mut self, summary: ModelSummary, ops: Vec<OpSpec>, device: String, note: Option<String>) {
        self.summary = Some(summary);
        self.ops = ops;
        self.device = device;
        self.note = note;
    }

    pub fn status(&self) -> String {
        match &self.summary {
            Some(s) => format!("Model: {} ({:.1} M parameters) on {}", s.architecture, s.parameters as f64 / 1e6, self.device),
            None => "No model loaded".into(),
        }
    }
}

pub fn show(app: &mut StudioApp, ui: &mut egui::Ui) {
    ui.label("A Llama-family, OPT, BLOOM or T5 / FLAN-T5 model as an HF folder (config.json, model.safetensors, tokenizer.json), or a Llama-family .gguf file.");
    ui.horizontal(|ui| {
        ui.label("Browse for");
        ui.radio_value(&mut app.model.gguf, false, "HF folder");
        ui.radio_value(&mut app.model.gguf, true, "GGUF file");
        ui.separator();
        ui.label("Device");
        ui.radio_value(&mut app.settings.device, DeviceChoice::Wgpu, "GPU (wgpu)");
        ui.radio_value(&mut app.settings.device, DeviceChoice::Cpu, "CPU");
    });
    let idle = app.worker.busy().is_none();
    let pick = Pick::Model { file: app.model.gguf };
    if path_row(ui, "Model path", &mut app.settings.model_path, pick, Some("Load model"), idle) {
        load(app);
    }
    if !app.settings.recent_models.is_empty() {
        ui.horizontal_wrapped(|ui| {
            ui.label("Recent:");
            for path in app.settings.recent_models.clone() {
                if ui.add_enabled(idle, egui::Button::new(&path).small()).clicked() {
                    app.settings.model_path = path;
                    load(app);
                }
            }
        });
    }
    ui.separator();
    match &app.model.summary {
        Some(summary) => {
            ui.strong("Model loaded");
            ui.label(egui::RichText::new(summary.to_string()).monospace());
            ui.label(format!("device       {}", app.model.device));
            if let Some(note) = &app.model.note {
                ui.colored_label(ui.visuals().warn_fg_color, note);
            }
        }
        None if app.worker.is_busy_with("loading the model") => {
            ui.spinner();
        }
        None => {
            ui.label("No model loaded yet.");
        }
    }
    ui.separator();
    found_models(app, ui, idle);
}

/// "Models on this computer": one row per model found, a click on a trainable one loads it.
fn found_models(app: &mut StudioApp, ui: &mut egui::Ui, idle: bool) {
    let found = &mut app.model.found;
    found.poll();
    if found.models.is_none() && found.scanning.is_none() {
        found.scan(ui.ctx());
    }
    let count = found.models.as_ref().map_or(String::new(), |m| format!(" ({})", m.len()));
    let mut chosen = None;
    egui::CollapsingHeader::new(format!("Models on this computer{count}")).id_salt("found-models").show(ui, |ui| {
        ui.horizontal(|ui| {
            if ui.add_enabled(found.scanning.is_none(), egui::Button::new("Rescan")).clicked() {
                found.scan(ui.ctx());
            }
            if found.scanning.is_some() {
                ui.spinner();
            }
            ui.label("Ollama, LM Studio and the Hugging Face cache; click a trainable model to load it.");
        });
        match &found.models {
            Some(models) if !models.is_empty() => chosen = found_grid(ui, models, idle),
            Some(_) => {
                ui.label("No models found.");
            }
            None => {}
        }
    });
    if let Some(m) = chosen {
        app.settings.model_path = m.path.display().to_string();
        app.model.gguf = m.format == Format::Gguf;
        load(app);
    }
}

/// The found models' rows; the one whose name was clicked.
fn found_grid(ui: &mut egui::Ui, models: &[FoundModel], idle: bool) -> Option<FoundModel> {
    let mut chosen = None;
    egui::Grid::new("found-models-grid").striped(true).show(ui, |ui| {
        for title in ["Name", "Source", "Architecture", "Size", "Quantization", "Trainable"] {
            ui.strong(title);
        }
        ui.end_row();
        for m in models {
            let path = m.path.display().to_string();
            if m.trainable.is_yes() {
                if ui.add_enabled(idle, egui::Button::new(&m.name).small()).on_hover_text(&path).clicked() {
                    chosen = Some(m.clone());
                }
            } else {
                ui.label(&m.name).on_hover_text(&path);
            }
            ui.label(m.source.to_string());
            ui.label(m.architecture.as_deref().unwrap_or("-"));
            ui.label(widgets::bytes(m.size as f64));
            ui.label(m.quantization.as_deref().unwrap_or("-"));
            // The last column: a long reason wraps at the window's edge (a grid cell alone would
            // wrap it at the column's width, a word a line).
            let room = (ui.clip_rect().right() - ui.cursor().left()).max(120.0);
            ui.scope(|ui| {
                ui.set_max_width(room);
                ui.add(egui::Label::new(m.trainable.to_string()).wrap());
            });
            ui.end_row();
        }
    });
    chosen
}

fn load(app: &mut StudioApp) {
    let path = app.settings.model_path.trim().to_owned();
    app.error = None;
    let precision = app.settings.frozen_precision;
    app.worker.send(Command::LoadModel { path: PathBuf::from(path), device: app.settings.device, precision });
}
