//! `greentrainer bench accuracy`: what each method keeps of the task for what it spends. Every
//! method trains from the same model on the same rows in the same order and is scored on the same
//! held-out rows: the base model, full fine-tuning, GreenTrainer at each rho, FT-top-k at the
//! FLOPs of each rho, and LoRA. The app's Method tab runs the same comparison, small, on the
//! user's model and data.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::held_out::{self, HeldOut};
use crate::device::ComputeDevice;
use crate::error::{Error, Result};
use crate::model::{FrozenPrecision, Model};
use crate::profile::{BatchShape, profile};
use crate::train::cost::step_macs;
use crate::train::{Event, Granularity, MethodKind, RunControl, TrainConfig, Trainer};

/// LoRA's learning rate over the others' by default: its adapters start at zero and need larger
/// steps (the paper's LoRA baseline used a higher rate too).
pub const LORA_LR_SCALE: f64 = 10.0;

/// What to compare, on what, for how long.
#[derive(Debug, Clone)]
pub struct Settings {
    pub model: PathBuf,
    pub train: PathBuf,
    /// Scored rows: this file's first `eval_rows`; when it is the training file, its last
    /// `eval_rows`, and training stops short of them.
    pub held_out: PathBuf,
    pub rhos: Vec<f64>,
    /// Training rows used (the file's first ones).
    pub train_rows: usize,
    pub epochs: usize,
    /// Stop each run after this many steps (0: all epochs).
    pub max_steps: usize,
    pub batch_size: usize,
    pub max_len: usize,
    pub lr: f64,
    /// LoRA's learning rate as a multiple of `lr` (its adapters start at zero and need larger steps).
    pub lora_lr_scale: f64,
    pub eval_rows: usize,
    /// Tokens generated per held-out row, and left for the answer in its prompt.
    pub answer_tokens: usize,
    /// GreenTrainer's selection unit and re-selection cadence (0: select once), the variants to
    /// measure against the baselines.
    pub granularity: Granularity,
    pub frozen_prompt: bool,
    pub reselect_every_steps: usize,
    /// Batches GreenTrainer scores importance on at each selection.
    pub importance_batches: usize,
    /// Also run full fine-tuning, FT-top-k and LoRA (off: the base model and GreenTrainer only,
    /// to compare variants against baselines measured before with the same settings).
    pub baselines: bool,
    /// How frozen weights are stored: GreenTrainer runs once per entry at each rho, FT-top-k and
    /// LoRA with the first (full fine-tuning freezes nothing).
    pub frozen_precisions: Vec<FrozenPrecision>,
}

/// One method's result.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub method: String,
    /// Tensors (or blocks) trained at the last selection; 0 for the base model.
    pub trained: usize,
    /// FLOPs spent over what full fine-tuning spends on the same batches.
    pub flops_ratio: f64,
    /// Training time over full fine-tuning's in this run.
    pub time_ratio: Option<f64>,
    pub train_time_s: f64,
    /// Mean loss of the last 10 steps.
    pub train_loss: Option<f64>,
    pub held_out_loss: f64,
    pub rouge1: f64,
    pub rouge2: f64,
    pub rouge_l: f64,
    pub energy_wh: Option<f64>,
}

/// A run of one method: its label and settings.
struct Plan {
    label: String,
    method: MethodKind,
    rho: f64,
    top_k: usize,
    lr: f64,
    frozen_precision: FrozenPrecision,
}

/// Trains and scores every method; `progress` hears what is running. Cancelling `control` stops the
/// method in training after its current step and ends the comparison with [`Error::Cancelled`].
pub fn run(s: &Settings, dev: &ComputeDevice, progress: &mut dyn FnMut(&str), control: &RunControl) -> Result<Vec<Row>> {
    if s.rhos.iter().any(|r| !(*r > 0.0 && *r <= 1.0)) {
        return Err(Error::Setting { key: "rho".into(), message: format!("every rho must be in (0, 1], not {:?}", s.rhos) });
    }
    let scratch = Scratch(std::env::temp_dir().join(format!("greentrainer-bench-accuracy-{}", std::process::id())));
    let config = |plan: &Plan| TrainConfig {
        model: s.model.clone(),
        data: s.train.clone(),
        output: scratch.0.join(plan.label.replace(' ', "-")),
        method: plan.method,
        rho: plan.rho,
        top_k: plan.top_k,
        lora_dropout: 0.0,
        epochs: s.epochs,
        max_steps: s.max_steps,
        batch_size: s.batch_size,
        max_len: s.max_len,
        lr: plan.lr,
        reselect_every_epochs: 0,
        reselect_every_steps: s.reselect_every_steps,
        importance_batches: s.importance_batches,
        granularity: s.granularity,
        frozen_prompt: s.frozen_prompt,
        frozen_precision: plan.frozen_precision,
        save_model: false,
        ..TrainConfig::default()
    };
    let precisions = if s.frozen_precisions.is_empty() { vec![FrozenPrecision::F32] } else { s.frozen_precisions.clone() };

    progress("loading the model and scoring the base model");
    let base_plan =
        Plan { label: "full".into(), method: MethodKind::Full, rho: 1.0, top_k: 1, lr: s.lr, frozen_precision: FrozenPrecision::F32 };
    let first = Trainer::prepare(config(&base_plan), dev.clone())?;
    // The same file however it is spelled ("a.jsonl", "./a.jsonl"), so held-out rows never train.
    let same_file = crate::io::same_path(&s.held_out, &s.train);
    let (held, train_rows) = if same_file {
        let mut all = held_out::examples(&first.loaded, &s.held_out, s.max_len, s.answer_tokens, usize::MAX)?;
        let before = all.len().saturating_sub(s.eval_rows);
        if before == 0 {
            return Err(Error::invalid(&s.train, format!("{} rows leave none to train on after holding out {}", all.len(), s.eval_rows)));
        }
        (all.split_off(before), s.train_rows.min(before))
    } else {
        (held_out::examples(&first.loaded, &s.held_out, s.max_len, s.answer_tokens, s.eval_rows)?, s.train_rows)
    };
    if held.is_empty() {
        return Err(Error::invalid(&s.held_out, "no held-out rows"));
    }
    let base = held_out::score(&first.loaded, first.pad_id(), &held, s.answer_tokens, &control.cancel)?;
    let mut rows = vec![row("base model".into(), 0, 0.0, 0.0, None, &[], &base, None)];

    let mut plans = Vec::new();
    if s.baselines {
        plans.push(base_plan);
    }
    for &rho in &s.rhos {
        let prompt = if s.frozen_prompt { ", frozen prompt" } else { "" };
        for &frozen_precision in &precisions {
            let stored =
                if frozen_precision == FrozenPrecision::F32 { String::new() } else { format!(", {} frozen", frozen_precision.name()) };
            let label = format!("GreenTrainer rho {rho}{prompt}{stored}");
            plans.push(Plan { label, method: MethodKind::Greentrainer, rho, top_k: 1, lr: s.lr, frozen_precision });
        }
    }
    if s.baselines {
        let mut top_ks: Vec<usize> =
            s.rhos.iter().map(|&rho| top_k_within(&first.loaded.model, s.batch_size, s.max_len, rho)).collect::<Result<_>>()?;
        top_ks.sort_unstable();
        top_ks.dedup();
        for k in top_ks {
            plans.push(Plan {
                label: format!("FT-top-{k}"),
                method: MethodKind::TopK,
                rho: 1.0,
                top_k: k,
                lr: s.lr,
                frozen_precision: precisions[0],
            });
        }
        plans.push(Plan {
            label: "LoRA".into(),
            method: MethodKind::Lora,
            rho: 1.0,
            top_k: 1,
            lr: s.lr * s.lora_lr_scale,
            frozen_precision: precisions[0],
        });
    }
    drop(first);

    // Time ratios are against full fine-tuning, run first when baselines are.
    let mut full_time = None;
    for plan in &plans {
        progress(&format!("training: {}", plan.label));
        let mut trainer = Trainer::prepare(config(plan), dev.clone())?;
        trainer.examples.truncate(train_rows.max(1));
        let (mut trained, mut losses, mut time, mut spent, mut full, mut energy) = (0, Vec::new(), 0.0, 0.0, 0.0, None);
        let outcome = trainer.run(
            &mut |e: &Event| match e {
                Event::Selection { selected, .. } => trained = selected.len(),
                Event::Step { loss, step_time_s, flops_spent, flops_full, .. } => {
                    losses.push(*loss);
                    time += step_time_s;
                    (spent, full) = (*flops_spent, *flops_full);
                }
                Event::Energy(footprint) => energy = Some(footprint.energy_wh),
                _ => {}
            },
            control,
            false,
        );
        let _ = std::fs::remove_dir_all(trainer.config.output.clone());
        if outcome?.cancelled {
            return Err(Error::Cancelled);
        }
        progress(&format!("scoring: {}", plan.label));
        let scored = held_out::score(&trainer.loaded, trainer.pad_id(), &held, s.answer_tokens, &control.cancel)?;
        if plan.method == MethodKind::Full {
            full_time = Some(time);
        }
        let label = match plan.method {
            MethodKind::Greentrainer => {
                let unit = match s.granularity {
                    Granularity::Tensor => "tensors",
                    Granularity::Head => "head blocks",
                    Granularity::Rows => "row blocks",
                };
                format!("{} ({trained} {unit})", plan.label)
            }
            _ => plan.label.clone(),
        };
        rows.push(row(label, trained, spent / full.max(f64::MIN_POSITIVE), time, full_time, &losses, &scored, energy));
    }
    Ok(rows)
}

/// The runs' output folders, removed however `run` ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[allow(clippy::too_many_arguments)] // one row's columns, named at the two call sites
fn row(
    method: String,
    trained: usize,
    flops_ratio: f64,
    time: f64,
    full_time: Option<f64>,
    losses: &[f64],
    h: &HeldOut,
    energy_wh: Option<f64>,
) -> Row {
    let tail = &losses[losses.len().saturating_sub(10)..];
    Row {
        method,
        trained,
        flops_ratio,
        time_ratio: full_time.filter(|_| time > 0.0).map(|full| time / full.max(f64::MIN_POSITIVE)),
        train_time_s: time,
        train_loss: (!tail.is_empty()).then(|| tail.iter().sum::<f64>() / tail.len() as f64),
        held_out_loss: h.loss,
        rouge1: h.rouge.rouge1 * 100.0,
        rouge2: h.rouge.rouge2 * 100.0,
        rouge_l: h.rouge.rouge_l * 100.0,
        energy_wh,
    }
}

/// The most last blocks FT-top-k can train within `rho` x full fine-tuning's FLOPs at the
/// planned batch shape (at least one).
pub fn top_k_within(model: &Model, batch: usize, max_len: usize, rho: f64) -> Result<usize> {
    let ops = model.op_graph();
    let p = profile(&ops, BatchShape::padded(&ops, batch, max_len), false).map_err(|e| Error::Other(e.to_string()))?;
    let ratio = |k: usize| step_macs(&p, model, &model.top_layers(k)) / p.t_full();
    Ok((1..=model.info().layers).take_while(|&k| ratio(k) <= rho).last().unwrap_or(1))
}

pub fn table(rows: &[Row], s: &Settings) -> String {
    let mut out = String::from(
        "| method | FLOPs vs full | time vs full | train loss (last 10) | held-out loss | ROUGE-1/2/L | energy Wh |\n|---|---|---|---|---|---|---|\n",
    );
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
    for r in rows {
        out += &format!(
            "| {} | {:.3} | {} | {} | {:.4} | {:.1}/{:.1}/{:.1} | {} |\n",
            r.method,
            r.flops_ratio,
            opt(r.time_ratio, 3),
            opt(r.train_loss, 4),
            r.held_out_loss,
            r.rouge1,
            r.rouge2,
            r.rouge_l,
            opt(r.energy_wh, 3)
        );
    }
    out + &format!(
        "\n{} on the first {} rows of {} ({} epochs{}, batch {}, max_len {}, lr {}, LoRA lr x{}, GreenTrainer re-selecting every {} steps (0: once), importance on {} batches); held-out: the first {} rows of {}, greedy answers of up to {} tokens, ROUGE F1 x 100 with stemming\n",
        s.model.display(),
        s.train_rows,
        s.train.display(),
        s.epochs,
        if s.max_steps > 0 { format!(", at most {} steps", s.max_steps) } else { String::new() },
        s.batch_size,
        s.max_len,
        s.lr,
        s.lora_lr_scale,
        s.reselect_every_steps,
        s.importance_batches,
        s.eval_rows,
        s.held_out.display(),
        s.answer_tokens
    )
}

/// ROUGE-L against the FLOPs ratio as an SVG document: one numbered point per method, and a
/// legend beside the plot naming each number (methods of similar cost would hide each other's
/// labels).
pub fn plot_svg(rows: &[Row]) -> String {
    const PLOT: f64 = 560.0;
    const LEGEND: f64 = 380.0;
    const H: f64 = 420.0;
    const M: f64 = 56.0;
    let top = rows.iter().map(|r| r.rouge_l).fold(10.0f64, f64::max) * 1.1;
    let x = |v: f64| M + v.clamp(0.0, 1.0) * (PLOT - 2.0 * M);
    let y = |v: f64| H - M - (v / top).clamp(0.0, 1.0) * (H - 2.0 * M);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <line x1=\"{M}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n<line x1=\"{M}\" y1=\"{M}\" x2=\"{M}\" y2=\"{b}\" stroke=\"black\"/>\n\
         <text x=\"{cx}\" y=\"{lx}\" text-anchor=\"middle\">training FLOPs / full fine-tuning</text>\n\
         <text x=\"16\" y=\"{cy}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {cy})\">held-out ROUGE-L</text>\n",
        w = PLOT + LEGEND,
        b = H - M,
        r = PLOT - M,
        cx = PLOT / 2.0,
        lx = H - 16.0,
        cy = H / 2.0,
    );
    for tick in 0..=4 {
        let f = tick as f64 / 4.0;
        svg += &format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{f:.2}</text>\n", x(f), H - M + 16.0);
        svg += &format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.0}</text>\n", M - 6.0, y(f * top) + 4.0, f * top);
    }
    for (i, r) in rows.iter().enumerate() {
        let (px, py) = (x(r.flops_ratio), y(r.rouge_l));
        svg += &format!("<circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"4\" fill=\"#2e7d32\"/>\n");
        svg += &format!("<text x=\"{:.1}\" y=\"{:.1}\" font-weight=\"bold\">{}</text>\n", px + 6.0, py - 5.0, i + 1);
        svg += &format!(
            "<text x=\"{PLOT}\" y=\"{:.1}\">{}. {} ({:.2}, {:.1})</text>\n",
            M + 18.0 * i as f64,
            i + 1,
            xml_text(&r.method),
            r.flops_ratio,
            r.rouge_l
        );
    }
    svg + "</svg>\n"
}

fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Writes the rows as JSON and the plot as SVG, each atomically.
pub fn write(rows: &[Row], json: &Path, svg: &Path) -> Result<()> {
    for path in [json, svg] {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
    }
    let text = serde_json::to_string_pretty(rows).map_err(|e| Error::Other(e.to_string()))?;
    crate::io::atomic::write_file(json, text.as_bytes())?;
    crate::io::atomic::write_file(svg, plot_svg(rows).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(method: &str, flops_ratio: f64, rouge_l: f64) -> Row {
        Row {
            method: method.into(),
            trained: 0,
            flops_ratio,
            time_ratio: None,
            train_time_s: 0.0,
            train_loss: None,
            held_out_loss: 0.0,
            rouge1: 0.0,
            rouge2: 0.0,
            rouge_l,
            energy_wh: None,
        }
    }

    /// The rows of a SmolLM2 run: every point drawn and numbered, every legend line inside the
    /// canvas (at ~6.5 px a character of 12 px sans-serif), text escaped.
    #[test]
    fn the_plot_draws_every_method_inside_the_canvas() {
        let rows = [
            measured("base model", 0.0, 13.4),
            measured("full", 1.0, 34.0),
            measured("GreenTrainer rho 0.5 (430 head blocks)", 0.52, 18.7),
            measured("GreenTrainer rho 0.7 (144 tensors)", 0.71, 34.1),
            measured("FT-top-5", 0.489, 19.2),
            measured("FT-top-16", 0.684, 35.1),
            measured("LoRA <r 8>", 0.687, 30.5),
        ];
        let svg = plot_svg(&rows);
        assert_eq!(svg.matches("<circle").count(), rows.len());
        assert!(svg.contains("LoRA &lt;r 8&gt;") && !svg.contains("<r 8>"));
        let canvas: f64 = svg.split("width=\"").nth(1).and_then(|r| r.split('"').next()).and_then(|v| v.parse().ok()).unwrap();
        let legend: Vec<&str> = svg.lines().filter(|l| l.starts_with("<text") && l.contains(". ")).collect();
        assert_eq!(legend.len(), rows.len(), "one legend line per method");
        for line in legend {
            let x: f64 = line.split("x=\"").nth(1).and_then(|r| r.split('"').next()).and_then(|v| v.parse().ok()).unwrap();
            let label = line.split('>').nth(1).and_then(|r| r.split('<').next()).unwrap();
            assert!(x + 6.5 * label.chars().count() as f64 <= canvas, "{label:?} runs past the canvas ({canvas} px)");
        }
    }
}
