//! Save tab: write the model (fine-tuned, once a run finished) as an HF folder, reload it as a
//! check, and say where it went.

use std::path::PathBuf;

use eframe::egui;

use super::StudioApp;
use super::widgets::{Pick, path_row};
use super::worker::Command;

#[derive(Default)]
pub struct SaveView {
    pub saved: Option<PathBuf>,
}

pub fn show(app: &mut StudioApp, ui: &mut egui::Ui) {
    let ready = app.worker.busy().is_none() && app.model.summary.is_some();
    let what = if app.run.outcome.is_some() { "the fine-tuned model" } else { "the loaded model (no run finished yet)" };
    ui.label(format!("Saves {what} as an HF folder (model.safetensors, config.json, tokenizer files) that transformers loads."));
    if path_row(ui, "Save folder", &mut app.settings.save_dir, Pick::Folder, Some("Save model"), ready) {
        app.save.saved = None;
        app.error = None;
        app.worker.send(Command::Save { dir: PathBuf::from(app.settings.save_dir.trim()) });
    }
    if let Some(dir) = &app.save.saved {
        let shown = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
        ui.strong(format!("Saved to {} and reloaded it as a check.", shown.display()));
    }
}
