//! Evaluate tab: ROUGE on a few held-out rows, with progress, and a prompt box.

use std::path::PathBuf;

use eframe::egui;

use super::StudioApp;
use super::widgets::number;
use super::worker::Command;
use crate::eval::runner::Evaluation;

#[derive(Default)]
pub struct EvalView {
    pub progress: Option<(usize, usize)>,
    pub result: Option<Evaluation>,
    prompt: String,
    /// The prompt box's last continuation.
    pub generated: Option<String>,
}

pub fn show(app: &mut StudioApp, ui: &mut egui::Ui) {
    let ready = app.worker.busy().is_none() && app.model.summary.is_some();
    if app.model.summary.is_none() {
        ui.label("Load a model first (after training, the fine-tuned weights are evaluated).");
    }
    ui.horizontal(|ui| {
        number(ui, "Rows", &mut app.settings.eval_rows, 1..=1000, 0.1);
        number(ui, "New tokens at most", &mut app.settings.max_new_tokens, 1..=1024, 1.0);
        if ui.add_enabled(ready, egui::Button::new("Run evaluation")).clicked() {
            let s = &app.settings;
            app.eval.progress = Some((0, s.eval_rows));
            app.eval.result = None;
            app.worker.send(Command::Evaluate {
                data: PathBuf::from(s.data_path.trim()),
                max_len: s.max_len,
                mapping: app.data.mapping.clone(),
                validation_fraction: s.validation_fraction,
                rows: s.eval_rows,
                max_new_tokens: s.max_new_tokens,
            });
        }
    });
    ui.label("Greedy summaries of the validation rows of the Data tab's file, scored against their references.");
    if let Some((done, total)) = app.eval.progress
        && app.eval.result.is_none()
    {
        ui.add(egui::ProgressBar::new(done as f32 / total.max(1) as f32).text(format!("{done} of {total} rows")));
    }
    if let Some(e) = &app.eval.result {
        let r = &e.rouge;
        ui.strong(format!(
            "ROUGE-1 {:.2}   ROUGE-2 {:.2}   ROUGE-L {:.2}   ROUGE-Lsum {:.2}   ({} rows, F1 x 100)",
            100.0 * r.rouge1,
            100.0 * r.rouge2,
            100.0 * r.rouge_l,
            100.0 * r.rouge_lsum,
            r.count
        ));
        egui::Grid::new("predictions").striped(true).num_columns(4).show(ui, |ui| {
            ui.strong("Row");
            ui.strong("Prediction");
            ui.strong("Reference");
            ui.strong("ROUGE-L");
            ui.end_row();
            for p in &e.predictions {
                ui.label(&p.at);
                wrapped(ui, &p.prediction);
                wrapped(ui, p.references.first().map_or("", String::as_str));
                ui.label(format!("{:.2}", 100.0 * p.rouge_l));
                ui.end_row();
            }
        });
    }
    ui.separator();
    let name = ui.label("Prompt");
    ui.add(egui::TextEdit::multiline(&mut app.eval.prompt).desired_rows(3).desired_width(f32::INFINITY)).labelled_by(name.id);
    if ui.add_enabled(ready, egui::Button::new("Generate")).clicked() {
        app.eval.generated = None;
        app.worker.send(Command::Generate { prompt: app.eval.prompt.clone(), max_new_tokens: app.settings.max_new_tokens });
    }
    match app.eval.generated.as_deref() {
        Some("") => {
            ui.label("Output: (the model ended the text at once)");
        }
        Some(text) => {
            ui.label(egui::RichText::new(format!("Output: {}{text}", app.eval.prompt)).monospace());
        }
        None => {}
    }
}

/// A table cell of fixed width: a grid column otherwise shrinks wrapped text to a word per line.
fn wrapped(ui: &mut egui::Ui, text: &str) {
    ui.allocate_ui(egui::vec2(460.0, 0.0), |ui| {
        ui.set_min_width(460.0);
        ui.add(egui::Label::new(text).wrap());
    });
}
