//! Save tab: write the model (fine-tuned, once a run finished) as an HF folder, reload it as a
//! check, optionally write the changed tensors as a delta, and say where it went; or as one GGUF
//! file with an Ollama Modelfile, for llama.cpp, Ollama and LM Studio.

use std::collections::HashMap;
use std::path::PathBuf;

use eframe::egui;

use super::StudioApp;
use super::widgets::{Pick, bytes, path_row};
use super::worker::{Command, DELTA_FILE};
use crate::io::gguf::Precision;
use crate::train::Event;

#[derive(Default)]
pub struct SaveView {
    /// The folder written, and the delta file with its tensor count when one was asked for.
    pub saved: Option<(PathBuf, Option<(PathBuf, usize)>)>,
    /// Replace a save folder that exists and holds files; off each session, so nothing the user
    /// keeps there is replaced without asking.
    pub replace: bool,
    /// The last GGUF export.
    pub exported: Option<crate::io::gguf::export::Exported>,
    /// Replace a GGUF file (and its Modelfile) that exists; off each session, like `replace`.
    replace_gguf: bool,
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
    ui.separator();
    gguf(app, ui, ready);
}

/// The GGUF export: the Llama family and Qwen2, in Q4_K_M, Q8_0, f16 or f32.
fn gguf(app: &mut StudioApp, ui: &mut egui::Ui, ready: bool) {
    ui.label("For llama.cpp, Ollama and LM Studio: one GGUF file (Llama family and Qwen2) with the tokenizer and chat template, and an Ollama Modelfile beside it.");
    ui.horizontal(|ui| {
        ui.label("Tensors");
        let precision = &mut app.settings.gguf_precision;
        ui.radio_value(precision, Precision::Q4_K_M, "Q4_K_M (4-bit mix, as Ollama's defaults)");
        ui.radio_value(precision, Precision::Q8_0, "Q8_0 (8-bit, half of f16)");
        ui.radio_value(precision, Precision::F16, "f16");
        ui.radio_value(precision, Precision::F32, "f32 (exact)");
    });
    ui.checkbox(&mut app.save.replace_gguf, "Replace the GGUF file and its Modelfile if they are there");
    if path_row(ui, "GGUF file", &mut app.settings.gguf_path, Pick::NewGguf, Some("Export GGUF"), ready) {
        app.save.exported = None;
        app.error = None;
        let path = PathBuf::from(app.settings.gguf_path.trim());
        app.worker.send(Command::ExportGguf { path, precision: app.settings.gguf_precision, replace: app.save.replace_gguf });
        app.save.replace_gguf = false;
    }
    if let Some(done) = &app.save.exported {
        ui.strong(format!(
            "Wrote {} ({}, {} tensors) and reloaded it as a check.",
            done.gguf.display(),
            bytes(done.bytes as f64),
            done.tensors
        ));
        ui.label(format!("In Ollama: ollama create my-model -f {}", done.modelfile.display()));
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
