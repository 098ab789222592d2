//! Evaluate tab: ROUGE on a few held-out rows (after training, the base model beside the fine-tuned one), with progress.

use std::path::PathBuf;

use eframe::egui;

use super::StudioApp;
use super::widgets::{displayable, number};
use super::worker::Command;
use crate::eval::runner::Evaluation;

#[derive(Default)]
pub struct EvalView {
    pub progress: Option<(usize, usize)>,
    /// The fine-tuned model's evaluation, and the base model's on the same rows once trained.
    pub result: Option<(Evaluation, Option<Evaluation>)>,
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
        if app.worker.is_busy_with(super::worker::EVALUATING) && ui.button("Cancel evaluation").clicked() {
            app.worker.control.request_cancel();
        }
    });
    ui.label("Greedy summaries of the first validation rows of the Data tab's file (each prompt leaves room for the new tokens), scored against their references; after training, the base model's beside the fine-tuned one's. `greentrainer eval` gives the same scores on the same rows.");
    if let Some((done, total)) = app.eval.progress
        && app.eval.result.is_none()
    {
        ui.add(egui::ProgressBar::new(done as f32 / total.max(1) as f32).text(format!("{done} of {total} rows")));
    }
    if let Some((tuned, base)) = &app.eval.result {
        let which = if base.is_some() { "Fine-tuned: " } else { "" };
        ui.strong(format!("{which}{}", scores(tuned)));
        if let Some(b) = base {
            ui.label(format!("Base (as loaded): {}", scores(b)));
        }
        // With a base model the cells are narrower, so three texts fit side by side.
        let width = if base.is_some() { 300.0 } else { 460.0 };
        let columns = if base.is_some() { 5 } else { 4 };
        egui::Grid::new("predictions").striped(true).num_columns(columns).show(ui, |ui| {
            ui.strong("Row");
            if base.is_some() {
                ui.strong("Prediction (base)");
            }
            ui.strong(if base.is_some() { "Prediction (fine-tuned)" } else { "Prediction" });
            ui.strong("Reference");
            ui.strong(if base.is_some() { "ROUGE-L base / tuned" } else { "ROUGE-L" });
            ui.end_row();
            for (i, p) in tuned.predictions.iter().enumerate() {
                let b = base.as_ref().and_then(|b| b.predictions.get(i));
                ui.label(&p.at);
                if let Some(b) = b {
                    wrapped(ui, &b.prediction, width);
                }
                wrapped(ui, &p.prediction, width);
                wrapped(ui, p.references.first().map_or("", String::as_str), width);
                ui.label(match b {
                    Some(b) => format!("{:.2} / {:.2}", 100.0 * b.rouge_l, 100.0 * p.rouge_l),
                    None => format!("{:.2}", 100.0 * p.rouge_l),
                });
                ui.end_row();
            }
        });
    }
}

fn scores(e: &Evaluation) -> String {
    let r = &e.rouge;
    format!(
        "ROUGE-1 {:.2}   ROUGE-2 {:.2}   ROUGE-L {:.2}   ROUGE-Lsum {:.2}   ({} rows, F1 x 100)",
        100.0 * r.rouge1,
        100.0 * r.rouge2,
        100.0 * r.rouge_l,
        100.0 * r.rouge_lsum,
        r.count
    )
}

/// A table cell of fixed width: a grid column otherwise shrinks wrapped text to a word per line.
fn wrapped(ui: &mut egui::Ui, text: &str, width: f32) {
    ui.allocate_ui(egui::vec2(width, 0.0), |ui| {
        ui.set_min_width(width);
        ui.add(egui::Label::new(displayable(text)).wrap());
    });
}
