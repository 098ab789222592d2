//! Tensors tab: a map of layers x tensor kinds, coloured by importance, with the selected tensors
//! outlined; hovering a cell gives its costs. Shows the realised rho and what the last
//! re-selection added and removed.

use std::collections::HashMap;

use eframe::egui;

use super::StudioApp;
use super::widgets::flops;
use crate::profile::blocks::parse_block;
use crate::profile::{BatchShape, FLOPS_PER_MAC, Node, profile};
use crate::train::Event;

const CELL: egui::Vec2 = egui::vec2(64.0, 22.0);

pub fn show(app: &mut StudioApp, ui: &mut egui::Ui) {
    if app.model.ops.is_empty() {
        ui.label("Load a model to see its tensors.");
        return;
    }
    let shape = BatchShape::padded(&app.model.ops, app.settings.batch_size.max(1), app.settings.max_len.max(1));
    let p = match profile(&app.model.ops, shape, false) {
        Ok(p) => p,
        Err(e) => {
            ui.colored_label(ui.visuals().error_fg_color, e.to_string());
            return;
        }
    };
    let empty = (Vec::new(), Vec::new());
    let (selected, importance) = match app.run.selection() {
        Some(Event::Selection { step, selected, deepest, realised_rho, time_rho, importance, added, removed, .. }) => {
            ui.label(format!(
                "Selection at step {step}: {} tensors trained, realised rho {realised_rho:.3} (FLOPs; {time_rho:.3} of the modelled time); the backward pass stops at {}",
                selected.len(),
                deepest.as_deref().unwrap_or("-")
            ));
            if *step > 0 {
                ui.label(format!("Added: {}   Removed: {}", list(added), list(removed)));
            }
            (selected.clone(), importance.clone())
        }
        _ => {
            ui.label("Start training to see which tensors are selected; colours then show their importance.");
            empty
        }
    };
    let importance: HashMap<&str, f64> = importance.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let max = importance.values().copied().fold(0.0, f64::max);
    ui.horizontal(|ui| {
        swatch(ui, egui::Color32::from_gray(60), Mark::None);
        ui.label("low importance");
        swatch(ui, colour(1.0), Mark::None);
        ui.label("high importance");
        swatch(ui, egui::Color32::from_gray(60), Mark::Whole);
        ui.label("selected");
        swatch(ui, egui::Color32::from_gray(60), Mark::Rows);
        ui.label("some rows selected");
    });
    // Columns: the per-layer tensor kinds in execution order; the first row holds the rest.
    let nodes: Vec<&Node> = p.nodes.iter().filter(|n| n.selectable).collect();
    let mut kinds: Vec<String> = Vec::new();
    for n in nodes.iter().filter(|n| n.layer.is_some()) {
        let k = kind(&n.name);
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    let layers = nodes.iter().filter_map(|n| n.layer).max().map_or(0, |l| l + 1);
    let cell = |ui: &mut egui::Ui, n: &Node| {
        let imp = importance.get(n.name.as_str()).copied();
        let fill = match imp {
            // The square root spreads the colours: the embedding's importance dwarfs the rest.
            Some(v) if max > 0.0 => colour((v / max).sqrt()),
            _ => egui::Color32::from_gray(60),
        };
        let chosen = selected.iter().any(|s| s == &n.name);
        // Block granularity selects row ranges of a weight: count the rows trained.
        let partial_rows: usize = selected.iter().filter_map(|s| parse_block(s)).filter(|(t, _)| *t == n.name).map(|(_, r)| r.len()).sum();
        let mark = if chosen {
            Mark::Whole
        } else if partial_rows > 0 {
            Mark::Rows
        } else {
            Mark::None
        };
        swatch(ui, fill, mark).on_hover_text(format!(
            "{}\nt_dy {}   t_dw {}  (per step)\nimportance {}\n{:.3} M parameters{}",
            n.name,
            flops(FLOPS_PER_MAC * n.t_dy),
            flops(FLOPS_PER_MAC * n.t_dw),
            imp.map_or("-".into(), |v| format!("{v:.4}")),
            n.param_numel as f64 / 1e6,
            match mark {
                Mark::Whole => "\nselected".to_string(),
                Mark::Rows => format!("\n{partial_rows} rows selected (block granularity)"),
                Mark::None => String::new(),
            }
        ));
    };
    egui::ScrollArea::horizontal().show(ui, |ui| {
        egui::Grid::new("tensor-map").spacing([4.0, 4.0]).show(ui, |ui| {
            ui.label("");
            for k in &kinds {
                ui.label(egui::RichText::new(short(k)).small());
            }
            ui.end_row();
            ui.label("model");
            for n in nodes.iter().filter(|n| n.layer.is_none()) {
                ui.vertical(|ui| {
                    cell(ui, n);
                    ui.label(egui::RichText::new(short(&kind(&n.name))).small());
                });
            }
            ui.end_row();
            for layer in (0..layers).rev() {
                ui.label(format!("layer {layer}"));
                for k in &kinds {
                    match nodes.iter().find(|n| n.layer == Some(layer) && &kind(&n.name) == k) {
                        Some(n) => cell(ui, n),
                        None => {
                            ui.label("");
                        }
                    }
                }
                ui.end_row();
            }
        });
    });
}

/// "q_proj" from "model.layers.3.self_attn.q_proj.weight". T5's sub-layers reuse short names, so
/// they keep their module: "cross.q" from "decoder.block.1.layer.1.EncDecAttention.q.weight",
/// "norm1" from "encoder.block.0.layer.1.layer_norm.weight".
fn kind(name: &str) -> String {
    let stem = name.strip_suffix(".weight").or_else(|| name.strip_suffix(".bias")).unwrap_or(name);
    let mut parts = stem.rsplit('.');
    let (last, parent) = (parts.next().unwrap_or(stem), parts.next().unwrap_or_default());
    match (parent, last) {
        ("SelfAttention", l) => format!("self.{l}"),
        ("EncDecAttention", l) => format!("cross.{l}"),
        ("DenseReluDense", l) => format!("ff.{l}"),
        (sub, "layer_norm") if stem.contains(".layer.") => format!("norm{sub}"),
        _ => last.to_owned(),
    }
}

/// Column headers that fit a cell.
fn short(kind: &str) -> &str {
    match kind {
        "input_layernorm" => "attn norm",
        "post_attention_layernorm" => "mlp norm",
        "embed_tokens" => "embedding",
        other => other.strip_suffix("_proj").unwrap_or(other),
    }
}

fn colour(t: f64) -> egui::Color32 {
    let t = t.clamp(0.0, 1.0) as f32;
    egui::Color32::from_rgb((40.0 + 20.0 * t) as u8, (60.0 + 160.0 * t) as u8, (50.0 + 30.0 * t) as u8)
}

/// How much of a tensor is trained.
#[derive(Clone, Copy, PartialEq)]
enum Mark {
    None,
    Whole,
    /// Some output rows (block granularity): outlined, with a hollow dot.
    Rows,
}

fn swatch(ui: &mut egui::Ui, fill: egui::Color32, mark: Mark) -> egui::Response {
    let (rect, response) = ui.allocate_exact_size(CELL, egui::Sense::hover());
    ui.painter().rect_filled(rect, 3.0, fill);
    if mark != Mark::None {
        ui.painter().rect_stroke(rect.shrink(1.0), 3.0, egui::Stroke::new(2.0, egui::Color32::WHITE), egui::StrokeKind::Inside);
    }
    match mark {
        Mark::Whole => {
            ui.painter().circle_filled(rect.center(), 4.0, egui::Color32::WHITE);
        }
        Mark::Rows => {
            ui.painter().circle_stroke(rect.center(), 4.0, egui::Stroke::new(1.5, egui::Color32::WHITE));
        }
        Mark::None => {}
    }
    response
}

fn list(names: &[String]) -> String {
    if names.is_empty() { "none".into() } else { names.iter().map(|n| kind_with_layer(n)).collect::<Vec<_>>().join(", ") }
}

/// "3.q_proj" from "model.layers.3.self_attn.q_proj.weight", "dec1.cross.q" from
/// "decoder.block.1.layer.1.EncDecAttention.q.weight".
fn kind_with_layer(name: &str) -> String {
    let block = |prefix: &str| name.strip_prefix(prefix).and_then(|r| r.split('.').next());
    match (block("model.layers."), block("encoder.block."), block("decoder.block.")) {
        (Some(layer), _, _) => format!("{layer}.{}", kind(name)),
        (_, Some(layer), _) => format!("enc{layer}.{}", kind(name)),
        (_, _, Some(layer)) => format!("dec{layer}.{}", kind(name)),
        _ => kind(name),
    }
}
