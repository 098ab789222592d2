//! Data tab: pick a file, see what was detected, remap columns, preview rows and token lengths,
//! and choose the validation share.

use std::path::PathBuf;

use eframe::egui;
use egui_plot::{Bar, BarChart, Plot, VLine};

use super::StudioApp;
use super::widgets::{Pick, number, path_row};
use super::worker::Command;
use crate::data::{Mapping, Preview};

/// Characters of a row's text shown in the table.
const CELL_CHARS: usize = 90;

#[derive(Default)]
pub struct DataView {
    pub preview: Option<Preview>,
    /// Column choices in the dropdowns.
    source: String,
    target: String,
    /// Set once the user overrides the detected layout; sent with every command that reads data.
    pub mapping: Option<Mapping>,
}

impl DataView {
    pub fn loaded(&mut self, preview: Preview) {
        if let Mapping::Columns { source, targets } = &preview.info.mapping {
            self.source = source.clone();
            self.target = targets.first().cloned().unwrap_or_default();
        }
        self.preview = Some(preview);
    }

    /// Rows available for training after the validation share, once previewed.
    pub fn train_rows(&self, validation_fraction: f64) -> Option<usize> {
        let rows = self.preview.as_ref()?.counts.rows;
        Some(rows - (rows as f64 * validation_fraction).round() as usize)
    }
}

pub fn show(app: &mut StudioApp, ui: &mut egui::Ui) {
    let can_read = app.worker.busy().is_none() && app.model.summary.is_some();
    if app.model.summary.is_none() {
        ui.label("Load a model first: its tokenizer measures the rows.");
    }
    ui.horizontal(|ui| {
        number(ui, "Max length (tokens)", &mut app.settings.max_len, 8..=8192, 4.0);
        ui.separator();
        let name = ui.label("Validation share");
        ui.add(egui::Slider::new(&mut app.settings.validation_fraction, 0.0..=0.5).fixed_decimals(2)).labelled_by(name.id);
    });
    if path_row(ui, "Data file", &mut app.settings.data_path, Pick::Data, Some("Preview data"), can_read) {
        app.data.mapping = None;
        preview(app);
    }
    let Some(p) = &app.data.preview else { return };
    ui.separator();
    egui::Grid::new("detected").num_columns(2).show(ui, |ui| {
        ui.label("Format");
        ui.label(format!("{} ({})", p.info.format, p.info.preset));
        ui.end_row();
        ui.label("Template");
        ui.label(&p.template);
        ui.end_row();
        ui.label("Rows");
        let c = p.counts;
        let val = (c.rows as f64 * app.settings.validation_fraction).round() as usize;
        ui.label(format!(
            "{} ({} for training, {} for validation); {} prompts and {} targets cut to fit; {} skipped",
            c.rows,
            c.rows - val,
            val,
            c.truncated_source,
            c.truncated_target,
            c.skipped
        ));
        ui.end_row();
    });
    let fields = p.info.fields.clone();
    let mut remap = false;
    ui.horizontal(|ui| {
        ui.label("Columns:");
        remap |= field_combo(ui, "Source column", &mut app.data.source, &fields);
        remap |= field_combo(ui, "Target column", &mut app.data.target, &fields);
        if app.data.mapping.is_some() && ui.button("Use detected").clicked() {
            app.data.mapping = None;
            preview(app);
        }
    });
    if remap && can_read {
        app.data.mapping = Some(Mapping::columns(&app.data.source, &[app.data.target.as_str()]));
        preview(app);
    }
    let Some(p) = &app.data.preview else { return };
    histogram(ui, p, app.settings.max_len);
    rows(ui, p);
}

fn preview(app: &mut StudioApp) {
    let path = app.settings.data_path.trim().to_owned();
    app.error = None;
    app.worker.send(Command::Preview { path: PathBuf::from(path), max_len: app.settings.max_len, mapping: app.data.mapping.clone() });
}

/// A dropdown over the file's fields; true when the choice changed.
fn field_combo(ui: &mut egui::Ui, label: &str, value: &mut String, fields: &[String]) -> bool {
    let before = value.clone();
    let name = ui.label(label);
    egui::ComboBox::from_id_salt(label)
        .selected_text(value.as_str())
        .show_ui(ui, |ui| {
            for f in fields {
                ui.selectable_value(value, f.clone(), f);
            }
        })
        .response
        .labelled_by(name.id);
    *value != before
}

fn histogram(ui: &mut egui::Ui, p: &Preview, max_len: usize) {
    ui.label("Token lengths before truncation (the red line is the max length):");
    let bars = p.histogram.iter().map(|b| Bar::new((b.lo + b.hi) as f64 / 2.0, b.count as f64).width((b.hi - b.lo) as f64 * 0.9)).collect();
    Plot::new("lengths").height(160.0).allow_scroll(false).allow_zoom(false).allow_drag(false).show(ui, |plot| {
        plot.bar_chart(BarChart::new("rows", bars));
        plot.vline(VLine::new("max length", max_len as f64).color(egui::Color32::RED));
    });
}

fn rows(ui: &mut egui::Ui, p: &Preview) {
    ui.label(format!("First {} rows after mapping:", p.rows.len()));
    egui::Grid::new("rows").striped(true).num_columns(4).show(ui, |ui| {
        ui.strong("Row");
        ui.strong("Source");
        ui.strong("Target");
        ui.strong("Tokens");
        ui.end_row();
        for r in &p.rows {
            ui.label(r.row.at.to_string());
            ui.label(cell(&r.row.source));
            ui.label(cell(r.row.target.as_deref().unwrap_or("(none)")));
            let cut = if r.untruncated_tokens > r.tokens { format!(" (of {})", r.untruncated_tokens) } else { String::new() };
            ui.label(format!("{}{cut}", r.tokens));
            ui.end_row();
        }
    });
    for m in &p.skip_messages {
        ui.colored_label(ui.visuals().warn_fg_color, m);
    }
}

/// One line of at most CELL_CHARS characters.
fn cell(text: &str) -> String {
    let line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(CELL_CHARS) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line,
    }
}
