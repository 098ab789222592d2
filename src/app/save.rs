//! Save tab: write the model (fine-tuned, once a run finished) as an HF folder, reload it as a
//! check, optionally write the changed tensors as a delta, and say where it went.

use std::collections::HashMap;
use std::path::PathBuf;

use eframe::egui;

use super::StudioApp;
use super::widgets::{Pick, path_row};
use super::worker::{Command, DELTA_FILE};
use crate::train::Event;

#[derive(Default)]
pub struct SaveView {
    /// The folder written, and the delta file with its tensor count when one was asked for.
    pub saved: Option<(PathBuf, Option<(PathBuf, usize)>)>,
    /// Replace a save folder that exists and holds files; off each session, so nothing the user
    /// keeps there is replaced without asking.
    pub replace: bool,
}

pub fn show(app: &mut StudioApp, ui: &mut egui::Ui) {
    let ready = app.worker.busy().is_none() && app.model.summary.is_some();
    let what = if app.run.outcome.is_some() { "the fine-tuned model" } else { "the loaded model (no run finished yet)" };
    ui.label(format!("Saves {what} as an HF folder (model.safetensors, config.json, tokenizer files) that transformers loads."));
    ui.checkbox(
        &mut app.settings.save_delta,
        format!("Also write {DELTA_FILE} beside the folder: only the tensors training changed, with the method, rho and selection"),
    );
    ui.checkbox(&mut app.save.replace, "Replace the model folder if one is there (a folder of other files is never replaced)");
    if path_row(ui, "Save folder", &mut app.settings.save_dir, Pick::Folder, Some("Save model"), ready) {
        app.save.saved = None;
        app.error = None;
        let delta = app.settings.save_delta.then(|| delta_metadata(app));
        app.worker.send(Command::Save { dir: PathBuf::from(app.settings.save_dir.trim()), replace: app.save.replace, delta });
        // Asked for each save, not left on for the next one.
        app.save.replace = false;
    }
    if let Some((dir, delta)) = &app.save.saved {
        let shown = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()).display().to_string();
        ui.strong(format!("Saved to {} and reloaded it as a check.", shown(dir)));
        if let Some((path, tensors)) = delta {
            ui.label(format!("Delta: {tensors} changed tensors in {}", shown(path)));
        }
    }
}

/// What the delta file records about how the tensors were chosen: the run's method and rho, and
/// the latest selection (GreenTrainer only).
fn delta_metadata(app: &StudioApp) -> HashMap<String, String> {
    let s = &app.settings;
    // The CLI's spelling of the method ("greentrainer", "top-k", ...).
    let method = serde_json::to_value(s.method).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
    let mut metadata = HashMap::from([("method".to_string(), method), ("rho".to_string(), s.rho.to_string())]);
    if let Some(Event::Selection { selected, .. }) = app.run.selection() {
        metadata.insert("selection".into(), serde_json::to_string(selected).unwrap_or_default());
    }
    metadata
}
