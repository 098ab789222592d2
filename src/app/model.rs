//! Model tab: pick an HF folder or a GGUF file and the device, load it, show its summary.

use std::path::PathBuf;

use eframe::egui;

use super::StudioApp;
use super::widgets::{Pick, path_row};
use super::worker::Command;
use crate::device::DeviceChoice;
use crate::model::summary::ModelSummary;
use crate::profile::OpSpec;

#[derive(Default)]
pub struct ModelView {
    pub summary: Option<ModelSummary>,
    /// The model's ops in execution order: what the Method and Tensors tabs cost and draw.
    pub ops: Vec<OpSpec>,
    pub device: String,
    /// Why the device fell back to the CPU, if it did.
    pub note: Option<String>,
    /// Whether Browse… asks for a .gguf file rather than an HF folder.
    gguf: bool,
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
}

fn load(app: &mut StudioApp) {
    let path = app.settings.model_path.trim().to_owned();
    app.error = None;
    app.worker.send(Command::LoadModel { path: PathBuf::from(path), device: app.settings.device });
}
