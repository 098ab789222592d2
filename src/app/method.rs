//! Method tab: what to train and within which FLOPs budget, with the cost of a step, an epoch and
//! the memory estimated live from the model's profile before anything runs.
//! Calibrate times a pass on the device to turn FLOPs into estimated seconds; Compare trains each
//! method briefly on the user's data and scores it on held-out rows, the accuracy side of the cost.

use crate::profile::reach::Reach;
use eframe::egui;

use super::StudioApp;
use super::widgets::{bytes, flops, number, seconds};
use super::worker::{COMPARING, Calibration, Command};
use crate::bench::accuracy::Row;
use crate::device::DeviceChoice;
use crate::model::FrozenPrecision;
use crate::model::lora::default_targets;
use crate::profile::{BatchShape, FLOPS_PER_MAC, OpKind, OpSpec, profile};
use crate::select::CostRule;
use crate::train::MethodKind;
use crate::train::batch::frozen_share;
use crate::train::cost::{Adapter, macs_with_adapters};
use crate::train::memory::{self, FrozenBytes, MemoryError, MemoryEstimate, Preflight, Target, Training};

#[derive(Default)]
pub struct MethodView {
    /// The last calibration on the loaded model and device.
    pub calibration: Option<Calibration>,
    /// What the running comparison of methods is doing.
    pub comparing: Option<String>,
    /// The last comparison's rows, the base model first.
    pub comparison: Option<Vec<Row>>,
}

/// What one configuration costs, before training.
pub struct Estimate {
    pub step_flops: f64,
    pub full_step_flops: f64,
    /// Training tensors' parameters (LoRA: the adapters').
    pub trainable: usize,
    pub total: usize,
    pub min_rho: f64,
    /// Tensors trained, when known before training.
    pub tensors: Option<usize>,
    /// GreenTrainer: how deep the backward pass can reach at this rho (whole-tensor selection).
    pub reach: Option<Reach>,
    /// The step's peak memory, activations included.
    pub memory: MemoryEstimate,
}

impl Estimate {
    pub fn feasible(&self, method: MethodKind, rho: f64) -> bool {
        method != MethodKind::Greentrainer || rho >= self.min_rho
    }
}

/// Costs `method` on `shape`: the padded batch the trainer plans (batch x max_len), with the head
/// charged for the previewed data's answer tokens when known; `lora` is (rank, target modules).
pub fn estimate(
    ops: &[OpSpec],
    method: MethodKind,
    rho: f64,
    top_k: usize,
    lora: (usize, &[String]),
    shape: BatchShape,
    (target, frozen): (Target, FrozenBytes<'_>),
) -> Result<Estimate, MemoryError> {
    let p = profile(ops, shape, false)?;
    let total = p.nodes.iter().map(|n| n.param_numel).sum();
    let training = memory::planned(ops, &p, method, rho, top_k, lora)?;
    let idx: Vec<usize> = (0..ops.len()).filter(|&i| training[i] != Training::Frozen).collect();
    let cost = |idx: &[usize]| p.selection_cost(idx, CostRule::Exact);
    let macs = match method {
        MethodKind::Full => p.t_full(),
        MethodKind::TopK => cost(&idx)?,
        MethodKind::Greentrainer => rho * p.t_full(),
        MethodKind::Lora => {
            let adapted: Vec<Adapter> = idx
                .iter()
                .filter_map(|&i| match ops[i].kind {
                    OpKind::Linear { d_in, .. } => Some(Adapter { node: i, rank: lora.0, d_in }),
                    _ => None,
                })
                .collect();
            macs_with_adapters(&p, &[], &adapted)
        }
    };
    Ok(Estimate {
        step_flops: macs * FLOPS_PER_MAC,
        full_step_flops: p.t_full() * FLOPS_PER_MAC,
        trainable: memory::trained_params(ops, &p, &training),
        total,
        min_rho: p.min_rho(),
        // GreenTrainer's selection follows importance measured when training starts.
        tensors: (method != MethodKind::Greentrainer).then_some(idx.len()),
        reach: (method == MethodKind::Greentrainer && rho >= p.min_rho()).then(|| Reach::of(&p, rho)),
        memory: memory::estimate_stored(ops, &training, shape, target, frozen)?,
    })
}

/// How the settings store the loaded model's frozen matrices, for the estimates.
fn frozen_bytes(app: &StudioApp) -> FrozenBytes<'_> {
    FrozenBytes { precision: app.settings.frozen_precision, quantized: Some(&app.model.source_bytes) }
}

/// The estimate for the app's current settings, if a model is loaded.
pub fn current(app: &StudioApp) -> Option<Result<Estimate, MemoryError>> {
    (!app.model.ops.is_empty()).then(|| estimate_for(app, app.settings.method))
}

/// `method` at the user's settings on the loaded model.
fn estimate_for(app: &StudioApp, method: MethodKind) -> Result<Estimate, MemoryError> {
    let s = &app.settings;
    let shape = shape_at(app, s.batch_size.max(1), s.max_len.max(1));
    estimate(&app.model.ops, method, s.rho, s.top_k, (s.lora_rank, &lora_targets(app)), shape, (target(app), frozen_bytes(app)))
}

fn lora_targets(app: &StudioApp) -> Vec<String> {
    default_targets(&app.model.ops)
}

/// The padded shape of `batch x max_len`; once a dataset is previewed, the head is charged for its
/// answer tokens only, as in training, and a frozen prompt prefix leaves GreenTrainer's backward
/// pass the share of tokens the previewed rows leave it.
fn shape_at(app: &StudioApp, batch: usize, max_len: usize) -> BatchShape {
    let shape = BatchShape::padded(&app.model.ops, batch, max_len);
    let Some(preview) = app.data.preview.as_ref() else { return shape };
    let shape = match preview.mean_target_tokens {
        Some(targets) => shape.with_mean_targets(targets),
        None => shape,
    };
    let s = &app.settings;
    match s.method == MethodKind::Greentrainer && s.frozen_prompt && !preview.row_lengths.is_empty() {
        true => shape.with_grad_share(frozen_share(&preview.row_lengths, batch)),
        false => shape,
    }
}

/// The device as calibrated, else as chosen (a GPU's binding limit is known once calibrated).
fn target(app: &StudioApp) -> Target {
    match (&app.method.calibration, app.settings.device) {
        (Some(c), _) => c.target,
        (None, DeviceChoice::Cpu) => Target::Cpu,
        (None, DeviceChoice::Wgpu) => Target::Wgpu { max_binding: None },
    }
}

/// The memory verdict at the user's settings against the calibrated device, with a proposal.
fn preflight(app: &StudioApp, total: Option<u64>) -> Result<Preflight, MemoryError> {
    let s = &app.settings;
    let ops = &app.model.ops;
    let (batch, max_len) = (s.batch_size.max(1), s.max_len.max(1));
    let p = profile(ops, shape_at(app, batch, max_len), false)?;
    let training = memory::planned(ops, &p, s.method, s.rho, s.top_k, (s.lora_rank, &lora_targets(app)))?;
    let scores = s.method == MethodKind::Greentrainer;
    memory::preflight(ops, &training, (batch, max_len), &|b, len| shape_at(app, b, len), (target(app), frozen_bytes(app)), scores, total)
}

pub fn show(app: &mut StudioApp, ui: &mut egui::Ui) {
    let s = &mut app.settings;
    ui.horizontal(|ui| {
        ui.label("Training method");
        ui.radio_value(&mut s.method, MethodKind::Greentrainer, "GreenTrainer");
        ui.radio_value(&mut s.method, MethodKind::Full, "Full fine-tuning");
        ui.radio_value(&mut s.method, MethodKind::Lora, "LoRA");
        ui.radio_value(&mut s.method, MethodKind::TopK, "FT-top-k");
    });
    match s.method {
        MethodKind::Greentrainer => {
            ui.add_enabled(
                s.budget.trim().is_empty(),
                egui::Slider::new(&mut s.rho, 0.05..=1.0).fixed_decimals(2).text("rho (share of full fine-tuning FLOPs)"),
            );
            ui.horizontal(|ui| {
                let name = ui.label("...or a budget");
                ui.add(egui::TextEdit::singleline(&mut s.budget).hint_text("2.5wh, 30g, 600s or 1e15flops").desired_width(140.0))
                    .labelled_by(name.id);
                match s.budget_choice() {
                    Some(Ok(b)) => ui.label(format!("{b}: the engine picks the largest rho that fits when training starts")),
                    Some(Err(e)) => ui.colored_label(ui.visuals().error_fg_color, e),
                    None => ui.weak("(empty: train at rho)"),
                };
            });
            ui.checkbox(&mut s.frozen_prompt, "Freeze the shared prompt prefix").on_hover_text(
                "Decoder-only models: each batch's prompt tokens before its first answer run without gradient, so the \
                 backward pass covers the answers only and the same rho trains deeper. The weights' gradients leave out \
                 what flows through the prompt's keys and values (see the README's Accuracy section).",
            );
        }
        MethodKind::TopK => {
            ui.horizontal(|ui| number(ui, "Blocks trained (k)", &mut s.top_k, 1..=256, 0.1));
        }
        MethodKind::Lora => {
            ui.horizontal(|ui| number(ui, "LoRA rank", &mut s.lora_rank, 1..=256, 0.2));
        }
        MethodKind::Full => {}
    }
    if s.method != MethodKind::Full {
        ui.horizontal(|ui| {
            ui.label("Frozen weights in").on_hover_text(
                "Weights that do not train are only read: f16 or bf16 halves their memory (converted block by block \
                 inside each product). Trained tensors keep f32 weights and f32 AdamW state. bf16 keeps f32's range; \
                 wgpu stores f16 for it (no bf16 there), and f32 on a GPU without f16 shaders. source keeps a GGUF \
                 file's Q8_0, Q4_0, Q4_1, Q4_K and Q6_K linear layers as the file holds them (an eighth to a quarter \
                 of f32) and the rest in f16.",
            );
            for p in FrozenPrecision::ALL {
                ui.radio_value(&mut s.frozen_precision, p, p.name());
            }
        });
    }
    ui.horizontal(|ui| {
        number(ui, "Batch size", &mut s.batch_size, 1..=256, 0.1);
        number(ui, "Epochs", &mut s.epochs, 0..=100, 0.1);
        number(ui, "Max steps (0: all)", &mut s.max_steps, 0..=1_000_000, 1.0);
        let name = ui.label("Learning rate");
        ui.add(egui::DragValue::new(&mut s.lr).range(0.0..=1.0).speed(1e-5).max_decimals(6)).labelled_by(name.id);
    });
    ui.separator();
    match current(app) {
        None => {
            ui.label("Load a model to see the cost of a step.");
        }
        Some(Err(e)) => {
            ui.colored_label(ui.visuals().error_fg_color, format!("Cannot cost this model: {e}"));
        }
        Some(Ok(e)) => {
            match cost_table(app, ui, &e) {
                Some(Remedy::Rho(rho)) => app.settings.rho = rho,
                Some(Remedy::FreezePrompt) => app.settings.frozen_prompt = true,
                None => {}
            }
            calibration(app, ui, &e);
            ui.separator();
            comparison(app, ui);
        }
    }
}

/// Held-out quality next to cost: the same comparison as `greentrainer bench accuracy`, small.
fn comparison(app: &mut StudioApp, ui: &mut egui::Ui) {
    let running = app.worker.is_busy_with(COMPARING);
    let s = &mut app.settings;
    ui.horizontal(|ui| {
        number(ui, "Comparison training rows", &mut s.compare_rows, 1..=100_000, 1.0);
        number(ui, "Held-out rows (the data file's last)", &mut s.compare_held_out, 1..=10_000, 0.2);
    });
    ui.horizontal(|ui| {
        let hint = "Trains full fine-tuning, GreenTrainer at this rho, FT-top-k at the same FLOPs and LoRA for one epoch \
                    over the data file's first rows, from the model file, and scores each on the held-out rows";
        let ready = app.worker.busy().is_none() && !s.data_path.trim().is_empty();
        if ui.add_enabled(ready, egui::Button::new("Compare methods")).on_hover_text(hint).clicked() {
            app.worker.send(Command::Compare { settings: s.comparison() });
        }
        if running {
            if ui.button("Cancel comparison").clicked() {
                app.worker.control.request_cancel();
            }
            ui.spinner();
            ui.label(app.method.comparing.as_deref().unwrap_or("starting"));
        } else if app.method.comparison.is_none() {
            ui.label("Compare to see, on your data, what each method keeps of the task for the FLOPs it spends.");
        }
    });
    let Some(rows) = &app.method.comparison else { return };
    egui::Grid::new("comparison").num_columns(5).striped(true).show(ui, |ui| {
        for head in ["Method", "FLOPs vs full", "Time vs full", "Held-out loss", "ROUGE-1/2/L"] {
            ui.strong(head);
        }
        ui.end_row();
        for r in rows {
            ui.label(&r.method);
            ui.label(format!("{:.3}", r.flops_ratio));
            ui.label(r.time_ratio.map_or("-".into(), |t| format!("{t:.3}")));
            ui.label(format!("{:.4}", r.held_out_loss));
            ui.label(format!("{:.1}/{:.1}/{:.1}", r.rouge1, r.rouge2, r.rouge_l));
            ui.end_row();
        }
    });
    egui_plot::Plot::new("rouge vs flops")
        .height(220.0)
        .x_axis_label("FLOPs vs full fine-tuning")
        .y_axis_label("held-out ROUGE-L")
        .legend(egui_plot::Legend::default())
        .show(ui, |plot| {
            for r in rows {
                plot.points(egui_plot::Points::new(r.method.clone(), vec![[r.flops_ratio, r.rouge_l]]).radius(5.0));
            }
        });
}

/// What the user picked from the depth guidance.
enum Remedy {
    Rho(f64),
    FreezePrompt,
}

/// The cost of the settings; returns what the user picked from the depth guidance.
fn cost_table(app: &StudioApp, ui: &mut egui::Ui, e: &Estimate) -> Option<Remedy> {
    let s = &app.settings;
    let mut picked = None;
    if !e.feasible(s.method, s.rho) {
        ui.colored_label(
            ui.visuals().error_fg_color,
            format!(
                "rho {:.2} is infeasible: the forward pass alone costs {:.3} of full fine-tuning, so no selection fits. Choose rho >= {:.3}.",
                s.rho,
                e.min_rho,
                e.min_rho
            ),
        );
        return None;
    }
    let steps_per_epoch = app.data.train_rows(s.validation_fraction).map(|rows| rows.div_ceil(s.batch_size.max(1)));
    egui::Grid::new("cost").num_columns(2).striped(true).show(ui, |ui| {
        ui.label("FLOPs per step");
        ui.label(format!("{} (full fine-tuning {})", flops(e.step_flops), flops(e.full_step_flops)));
        ui.end_row();
        ui.label("Saving vs full");
        ui.strong(format!("{:.1}%", 100.0 * (1.0 - e.step_flops / e.full_step_flops)));
        ui.end_row();
        if s.method != MethodKind::Lora
            && let Ok(lora) = estimate_for(app, MethodKind::Lora)
        {
            ui.label("LoRA for comparison");
            ui.label(format!(
                "{} per step (r {}, {:.1}% below full)",
                flops(lora.step_flops),
                s.lora_rank,
                100.0 * (1.0 - lora.step_flops / lora.full_step_flops)
            ));
            ui.end_row();
        }
        ui.label("FLOPs per epoch");
        ui.label(match steps_per_epoch {
            Some(n) => format!("{} ({n} steps; full {})", flops(e.step_flops * n as f64), flops(e.full_step_flops * n as f64)),
            None => "preview the data to count steps".into(),
        });
        ui.end_row();
        // Before any run, energy can only be estimated: FLOPs at an assumed device efficiency.
        let efficiency = if s.device == DeviceChoice::Cpu { crate::green::meter::CPU } else { crate::green::meter::GPU };
        let grid = crate::green::carbon::DEFAULT_G_PER_KWH;
        ui.label("Energy per epoch (estimated)");
        ui.label(match steps_per_epoch {
            Some(n) => {
                let wh = |f: f64| efficiency.joules(f * n as f64) / 3600.0;
                format!(
                    "{:.3} Wh, {:.2} g CO2 at {grid:.0} g/kWh (full fine-tuning {:.3} Wh; assumed {} efficiency)",
                    wh(e.step_flops),
                    crate::green::carbon::co2_grams(wh(e.step_flops), grid),
                    wh(e.full_step_flops),
                    efficiency.label
                )
            }
            None => "preview the data to count steps".into(),
        });
        ui.end_row();
        if let Some(reach) = &e.reach {
            ui.label("Depth");
            let text = reach.describe();
            if reach.shallow() {
                ui.horizontal_wrapped(|ui| {
                    ui.colored_label(ui.visuals().warn_fg_color, text);
                    // Rounded up, as the description prints it, so the rho picked does reach.
                    if let Some(deep) = reach.rho_for_deep.map(|r| (r * 100.0).ceil() / 100.0)
                        && ui.button(format!("Use rho {deep:.2}")).clicked()
                    {
                        picked = Some(Remedy::Rho(deep));
                    }
                    // An encoder-decoder model's prompt is the encoder's: nothing to freeze.
                    let decoder_only = app.model.summary.as_ref().is_some_and(|m| !m.encoder_decoder);
                    if decoder_only
                        && !s.frozen_prompt
                        && ui
                            .button("Freeze the prompt prefix")
                            .on_hover_text("The backward pass then covers the answers only, and this rho reaches deeper")
                            .clicked()
                    {
                        picked = Some(Remedy::FreezePrompt);
                    }
                });
            } else {
                ui.label(text);
            }
            ui.end_row();
        }
        ui.label("Smallest feasible rho");
        ui.label(format!("{:.3} (the forward pass)", e.min_rho));
        ui.end_row();
        ui.label("Trainable parameters");
        let which =
            if s.method == MethodKind::Greentrainer { " (estimate: the selection follows importance measured at the start)" } else { "" };
        let tensors = e.tensors.map(|t| format!(" in {t} tensors")).unwrap_or_default();
        ui.label(format!("{:.2} M of {:.2} M{tensors}{which}", e.trainable as f64 / 1e6, e.total as f64 / 1e6));
        ui.end_row();
        ui.label("Memory (peak, estimated)");
        ui.label(memory_breakdown(&e.memory));
        ui.end_row();
    });
    picked
}

/// The peak and what it is made of.
fn memory_breakdown(m: &MemoryEstimate) -> String {
    let b = |v: u64| bytes(v as f64);
    format!(
        "{} = weights {} + AdamW state {} + the step's peak {} (gradients {}, activations {} over {} blocks crossed, LM head {})",
        b(m.peak()),
        b(m.weights),
        b(m.optimizer),
        b(m.step_peak),
        b(m.gradients),
        b(m.activations),
        m.blocks_crossed,
        b(m.transient)
    )
}

/// Time estimates from a timed pass on the device, and the memory estimate against the device.
fn calibration(app: &mut StudioApp, ui: &mut egui::Ui, e: &Estimate) {
    let ready = app.worker.busy().is_none();
    ui.horizontal(|ui| {
        let hint = "Times one forward+backward pass of full fine-tuning on a small random batch on the chosen device";
        if ui.add_enabled(ready, egui::Button::new("Calibrate")).on_hover_text(hint).clicked() {
            app.worker.send(Command::Calibrate { max_len: app.settings.max_len });
        }
        if app.worker.is_busy_with(super::worker::CALIBRATING) {
            ui.spinner();
            // It stops after the pass in hand: the warm-up or the timed one.
            if ui.button("Cancel calibration").clicked() {
                app.worker.control.request_cancel();
            }
        } else if app.method.calibration.is_none() {
            ui.label("Calibrate to estimate the time per step and check the memory against the device.");
        }
    });
    let Some(c) = &app.method.calibration else { return };
    let s = &app.settings;
    let step = e.step_flops * c.seconds_per_flop;
    let steps_per_epoch = app.data.train_rows(s.validation_fraction).map(|rows| rows.div_ceil(s.batch_size.max(1)));
    let fit = preflight(app, c.device_memory);
    let mut picked = None;
    egui::Grid::new("timing").num_columns(2).striped(true).show(ui, |ui| {
        ui.label("Time per step (estimated)");
        ui.label(format!(
            "{} ({:.3} ns per FLOP measured on a 1-row batch; longer rows and batches often run more efficiently)",
            seconds(step),
            c.seconds_per_flop * 1e9
        ));
        ui.end_row();
        ui.label("Time per epoch (estimated)");
        ui.label(match steps_per_epoch {
            Some(n) => seconds(step * n as f64),
            None => "preview the data to count steps".into(),
        });
        ui.end_row();
        ui.label("Device memory");
        match &fit {
            Ok(fit) => picked = memory_verdict(ui, fit),
            Err(err) => {
                ui.colored_label(ui.visuals().error_fg_color, err.to_string());
            }
        }
        ui.end_row();
    });
    if let Some((batch, max_len)) = picked {
        app.settings.batch_size = batch;
        app.settings.max_len = max_len;
    }
}

/// Fits or not, with a button for the proposed batch and max_len; returns them when clicked.
fn memory_verdict(ui: &mut egui::Ui, fit: &Preflight) -> Option<(usize, usize)> {
    let mut picked = None;
    ui.horizontal_wrapped(|ui| {
        let scoring = match fit.scoring {
            Some(peak) => format!(" (importance scoring, at each selection: {})", bytes(peak as f64)),
            None => String::new(),
        };
        let text = format!("the estimated {}{scoring}: {}", bytes(fit.estimate.peak() as f64), fit.verdict.describe());
        if fit.verdict.runs() {
            ui.label(text);
            return;
        }
        ui.colored_label(ui.visuals().warn_fg_color, text);
        match fit.proposal {
            Some((batch, max_len)) => {
                if ui.button(format!("Use batch {batch}, max_len {max_len}")).clicked() {
                    picked = Some((batch, max_len));
                }
            }
            None => {
                ui.label("(not even batch 1 of one token fits)");
            }
        }
    });
    picked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Linears;
    use crate::model::lora::LoraConfig;
    use crate::train::cost::step_macs;

    #[test]
    fn the_lora_estimate_is_what_the_trainer_charges() {
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-llama");
        let loaded = crate::io::load_model(&fixture, &crate::device::ComputeDevice::cpu().device).unwrap();
        let ops = loaded.model.op_graph();
        let targets = default_targets(&ops);
        let shape = BatchShape::padded(&ops, 2, 24);
        let mut adapted = loaded.model.clone();
        let adapters = adapted.attach_lora(&LoraConfig { rank: 4, ..LoraConfig::paper(targets.clone()) }).into_iter().collect();
        let charged = step_macs(&profile(&ops, shape, false).unwrap(), &adapted, &adapters);
        let planned = estimate(&ops, MethodKind::Lora, 0.5, 1, (4, &targets), shape, (Target::Cpu, FrozenPrecision::F32.into())).unwrap();
        let macs = planned.step_flops / FLOPS_PER_MAC;
        assert!((macs - charged).abs() <= 1e-9 * charged, "the Method tab plans {macs} MACs, the trainer charges {charged}");
        assert!(macs < planned.full_step_flops / FLOPS_PER_MAC, "LoRA below full fine-tuning");
    }
}
