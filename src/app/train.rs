//! Train tab: start, pause in place, cancel (a checkpoint is kept) and resume a run; live progress and plots from
//! the engine's event stream; reopen a past run from its events.jsonl.

use std::path::{Path, PathBuf};

use eframe::egui;
use egui_plot::{Legend, Line, Plot, PlotPoints};

use super::StudioApp;
use super::widgets::{Pick, flops, flops_unit, path_row};
use super::worker::{Command, TRAINING};
use crate::train::{Event, RunOutcome};

#[derive(Default)]
pub struct RunView {
    /// The run on screen: live, or reopened from a log.
    pub events: Vec<Event>,
    pub running: bool,
    /// Set when the events came from a past run's log.
    pub reopened: Option<PathBuf>,
    /// Where the latest run stopped, in words.
    pub outcome: Option<String>,
}

impl RunView {
    pub fn on_event(&mut self, event: Event) {
        self.events.push(event);
    }

    pub fn finished(&mut self, outcome: RunOutcome) {
        self.running = false;
        self.outcome = Some(if outcome.cancelled {
            format!("Cancelled after {} steps; a checkpoint was kept, Resume continues from it.", outcome.steps)
        } else {
            format!("Training finished: {} steps.", outcome.steps)
        });
    }

    pub fn reopened(&mut self, log: PathBuf, events: Vec<Event>) {
        self.events = events;
        self.reopened = Some(log);
        self.outcome = None;
    }

    /// The latest selection event: what the Tensors tab draws.
    pub fn selection(&self) -> Option<&Event> {
        self.events.iter().rev().find(|e| matches!(e, Event::Selection { .. }))
    }

    fn total_steps(&self) -> usize {
        self.events
            .iter()
            .rev()
            .find_map(|e| if let Event::Started { total_steps, .. } = e { Some(*total_steps) } else { None })
            .unwrap_or(0)
    }

    /// (step, loss, lr, tokens, step time, FLOPs spent, FLOPs full) per step.
    fn steps(&self) -> impl Iterator<Item = StepPoint> + '_ {
        self.events.iter().filter_map(|e| match e {
            Event::Step { step, loss, lr, tokens, step_time_s, flops_spent, flops_full, .. } => {
                Some((*step as f64, *loss, *lr, *tokens, *step_time_s, *flops_spent, *flops_full))
            }
            _ => None,
        })
    }
}

/// One step of a run as plotted: (step, loss, lr, tokens, step time, FLOPs spent, FLOPs full).
type StepPoint = (f64, f64, f64, usize, f64, f64, f64);

pub fn show(app: &mut StudioApp, ui: &mut egui::Ui) {
    let idle = app.worker.busy().is_none();
    path_row(ui, "Run folder", &mut app.settings.output_dir, Pick::Folder, None, idle);
    let estimate = super::method::current(app);
    let blocker = match &estimate {
        None => Some("Load a model first (Model tab).".to_string()),
        Some(Err(e)) => Some(e.to_string()),
        _ if matches!(app.settings.budget_choice(), Some(Err(_))) => Some("The budget does not parse: see the Method tab.".into()),
        // With a budget the engine picks rho (and refuses a budget below the forward pass).
        Some(Ok(_)) if matches!(app.settings.budget_choice(), Some(Ok(_))) => None,
        Some(Ok(e)) if !e.feasible(app.settings.method, app.settings.rho) => {
            Some(format!("rho is below {:.3}: see the Method tab.", e.min_rho))
        }
        Some(Ok(_)) => None,
    };
    let training = app.worker.is_busy_with(TRAINING);
    ui.horizontal(|ui| {
        let can_start = idle && blocker.is_none();
        if ui.add_enabled(can_start, egui::Button::new("Start training")).clicked() {
            start(app, false);
        }
        let has_checkpoint = PathBuf::from(&app.settings.output_dir).join("checkpoint/state.json").exists();
        if ui
            .add_enabled(can_start && has_checkpoint, egui::Button::new("Resume"))
            .on_hover_text("Continue from the run folder's checkpoint")
            .clicked()
        {
            start(app, true);
        }
        let cancelling = app.worker.control.cancelled();
        if ui
            .add_enabled(training && !cancelling, egui::Button::new("Cancel"))
            .on_hover_text("Stops after the current step and keeps a checkpoint")
            .clicked()
        {
            app.worker.control.request_cancel();
        }
        let paused = app.worker.control.paused();
        if training && paused && !cancelling {
            ui.strong("Paused");
            if ui.button("Continue").clicked() {
                app.worker.control.set_paused(false);
            }
        } else if ui
            .add_enabled(training && !cancelling, egui::Button::new("Pause"))
            .on_hover_text("Waits after the current step, keeping everything in memory")
            .clicked()
        {
            app.worker.control.set_paused(true);
        }
        if let Some(b) = &blocker {
            ui.label(b);
        }
    });
    if let Some(o) = &app.run.outcome {
        ui.label(o);
    }
    if let Some(log) = &app.run.reopened {
        ui.label(format!("Showing the past run {}", log.display()));
    }
    progress(app, ui);
    ui.separator();
    if path_row(ui, "Past run log", &mut app.settings.run_log, Pick::Log, Some("Open run"), idle) {
        app.worker.send(Command::OpenRun { log: PathBuf::from(app.settings.run_log.trim()) });
    }
}

fn start(app: &mut StudioApp, resume: bool) {
    if !resume {
        app.run.events.clear();
        // A new run never writes over an earlier one: it takes the next free numbered folder.
        let free = crate::train::output::next_free(Path::new(app.settings.output_dir.trim()));
        app.settings.output_dir = free.display().to_string();
    }
    let s = &app.settings;
    app.run.running = true;
    app.run.reopened = None;
    app.run.outcome = None;
    app.error = None;
    app.settings.run_log = PathBuf::from(&s.output_dir).join("events.jsonl").display().to_string();
    let mut config = app.settings.train_config();
    if let Some(crate::data::Mapping::Columns { source, targets }) = &app.data.mapping {
        config.source_field = Some(source.clone());
        config.target_fields = targets.clone();
    }
    let command =
        Command::Train { config, mapping: app.data.mapping.clone(), validation_fraction: app.settings.validation_fraction, resume };
    app.worker.send(command);
}

fn progress(app: &StudioApp, ui: &mut egui::Ui) {
    let run = &app.run;
    let steps: Vec<_> = run.steps().collect();
    let total = run.total_steps();
    if let Some(Event::Started { method, device, train_examples, truncated_rows, .. }) =
        run.events.iter().rev().find(|e| matches!(e, Event::Started { .. }))
    {
        ui.label(format!("{method} on {device}: {train_examples} examples ({truncated_rows} cut to fit), {total} steps"));
    }
    let Some(&(step, loss, lr, tokens, step_time, spent, full)) = steps.last() else {
        if run.running {
            let scoring = run.events.iter().rev().find_map(|e| match e {
                Event::Scoring { pass, passes, .. } => Some(format!("Scoring importance: pass {} of {passes}…", pass + 1)),
                _ => None,
            });
            ui.horizontal(|ui| {
                ui.spinner();
                ui.label(scoring.as_deref().unwrap_or("Preparing: loading the data…"));
            });
        }
        return;
    };
    let mean_time = steps.iter().map(|s| s.4).sum::<f64>() / steps.len() as f64;
    let left = total.saturating_sub(step as usize);
    let eta = if run.running { format!("  ETA {}", duration(mean_time * left as f64)) } else { String::new() };
    ui.add(egui::ProgressBar::new(if total > 0 { step as f32 / total as f32 } else { 0.0 }).text(format!("step {step} of {total}{eta}")));
    ui.label(format!(
        "loss {loss:.4}   lr {lr:.2e}   {:.0} tokens/s   FLOPs {} spent vs {} for full fine-tuning ({:.1}% saved)",
        tokens as f64 / step_time.max(1e-9),
        flops(spent),
        flops(full),
        crate::train::progress::saved_percent(spent, full)
    ));
    let series = |f: &dyn Fn(&StepPoint) -> f64| PlotPoints::from(steps.iter().map(|s| [s.0, f(s)]).collect::<Vec<_>>());
    // FLOPs are plotted in the unit of the largest value so the axis reads "3.2", not "3200000000".
    let (scale, unit) = flops_unit(full);
    let flops_title = format!("Cumulative {unit}");
    let width = (ui.available_width() - 16.0) / 3.0;
    ui.horizontal(|ui| {
        for (id, title) in [("loss", "Loss"), ("lr", "Learning rate"), ("flops", flops_title.as_str())] {
            ui.vertical(|ui| {
                ui.label(title);
                let plot = Plot::new(id).width(width).height(200.0).allow_scroll(false).legend(Legend::default());
                plot.show(ui, |p| match id {
                    "loss" => p.line(Line::new("loss", series(&|s| s.1))),
                    "lr" => p.line(Line::new("lr", series(&|s| s.2))),
                    _ => {
                        p.line(Line::new("spent", series(&|s| s.5 / scale)));
                        p.line(Line::new("full fine-tuning", series(&|s| s.6 / scale)));
                    }
                });
            });
        }
    });
    for e in run
        .events
        .iter()
        .filter(|e| matches!(e, Event::Checkpoint { .. } | Event::Cancelled { .. } | Event::Energy(_) | Event::Finished { .. }))
    {
        ui.label(match e {
            Event::Checkpoint { step, path } => format!("step {step}: checkpoint in {}", path.display()),
            Event::Cancelled { step, checkpoint } => format!("cancelled at step {step}; checkpoint in {}", checkpoint.display()),
            Event::Energy(f) => format!(
                "energy {} ({}), {:.3} g CO2 at {:.0} g/kWh{}",
                if f.energy_wh < 0.1 { format!("{:.2} mWh", f.energy_wh * 1e3) } else { format!("{:.3} Wh", f.energy_wh) },
                f.energy_source,
                f.co2_g,
                f.grid_g_per_kwh,
                f.budget.as_ref().map_or(String::new(), |b| format!(
                    "; budget {} {}, realised {:.4} (rho {:.3})",
                    b.budget.amount(),
                    b.budget.unit(),
                    b.realised,
                    b.rho
                ))
            ),
            Event::Finished { steps, wall_time_s, final_loss, .. } => {
                format!(
                    "finished {steps} steps in {}, final loss {}",
                    duration(*wall_time_s),
                    final_loss.map_or("-".into(), |l| format!("{l:.4}"))
                )
            }
            _ => continue,
        });
    }
}

fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 { format!("{}h{:02}m", s / 3600, s / 60 % 60) } else { format!("{}m{:02}s", s / 60, s % 60) }
}
