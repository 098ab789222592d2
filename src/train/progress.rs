//! Terminal progress for headless runs, fed by the event stream.

use indicatif::{ProgressBar, ProgressStyle};

use super::events::{Event, EventSink};
use crate::profile::FlopsConvention;

#[derive(Default)]
pub struct ProgressPrinter {
    bar: Option<ProgressBar>,
}

impl EventSink for ProgressPrinter {
    fn emit(&mut self, event: &Event) {
        match event {
            Event::Started { method, device, total_steps, train_examples, truncated_rows, resumed_from_step, .. } => {
                eprintln!("{method} on {device}: {train_examples} examples ({truncated_rows} truncated to fit), {total_steps} steps");
                let bar = ProgressBar::new(*total_steps as u64);
                bar.set_style(
                    ProgressStyle::with_template("{bar:30} {pos}/{len} steps  eta {eta}  {msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_position(resumed_from_step.unwrap_or(0) as u64);
                self.bar = Some(bar);
            }
            Event::Scoring { pass, passes, .. } => match &self.bar {
                Some(bar) => bar.set_message(format!("scoring importance: pass {} of {passes}", pass + 1)),
                None => eprintln!("scoring importance: pass {} of {passes}", pass + 1),
            },
            Event::Selection { selected, realised_rho, time_rho, deepest, step, .. } => {
                self.println(format!(
                    "step {step}: training {} tensors, realised rho {realised_rho:.3} (FLOPs; {time_rho:.3} of the modelled time), backward stops at {}",
                    selected.len(),
                    deepest.as_deref().unwrap_or("-")
                ));
            }
            Event::Step { step, loss, flops_spent, flops_full, .. } => {
                if let Some(bar) = &self.bar {
                    bar.set_position(*step as u64);
                    bar.set_message(format!("loss {loss:.4}  FLOPs saved {:.1}%", saved_percent(*flops_spent, *flops_full)));
                }
            }
            Event::Checkpoint { step, path } => self.println(format!("step {step}: checkpoint {}", path.display())),
            Event::Cancelled { step, checkpoint } => {
                self.finish();
                eprintln!("cancelled at step {step}; resume from {} with --resume", checkpoint.display());
            }
            Event::Energy(f) => {
                self.finish();
                eprintln!(
                    "energy: {:.3} Wh, {}; CO2 {:.2} g at {} g/kWh; training time {:.1} s",
                    f.energy_wh, f.energy_source, f.co2_g, f.grid_g_per_kwh, f.wall_time_s
                );
                if let Some(b) = &f.budget {
                    eprintln!("budget {} picked rho {:.4}; realised {:.4} {}", b.budget, b.rho, b.realised, b.budget.unit());
                }
            }
            Event::Finished { steps, flops_spent, flops_full, wall_time_s, final_loss, output, .. } => {
                self.finish();
                let flops = |f: f64| FlopsConvention::Flops.format(f / 2.0);
                eprintln!(
                    "done: {steps} steps in {wall_time_s:.1} s, final loss {}, {} spent vs {} for full fine-tuning ({:.1}% saved, importance scoring included){}",
                    final_loss.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into()),
                    flops(*flops_spent),
                    flops(*flops_full),
                    saved_percent(*flops_spent, *flops_full),
                    output.as_ref().map(|o| format!("; model saved to {}", o.display())).unwrap_or_default()
                );
            }
        }
    }
}

impl ProgressPrinter {
    fn println(&self, line: String) {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(line),
            _ => eprintln!("{line}"),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

pub fn saved_percent(spent: f64, full: f64) -> f64 {
    if full > 0.0 { 100.0 * (1.0 - spent / full) } else { 0.0 }
}
