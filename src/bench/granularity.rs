//! `greentrainer bench granularity`: GreenTrainer at the same rho with whole-tensor selection and
//! with head-block selection, from the same start on the same batches: FLOPs spent, realised rho,
//! training loss, held-out loss and held-out ROUGE (greedy summaries), side by side.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use super::held_out::{self, HeldOut, rouge_cell};
use crate::data::Example;
use crate::device::ComputeDevice;
use crate::error::Result;
use crate::train::{Event, Granularity, MethodKind, RunControl, TrainConfig, Trainer};

pub struct Row {
    pub granularity: Granularity,
    pub selected: usize,
    pub realised_rho: f64,
    pub flops_spent: f64,
    pub final_train_loss: f64,
    /// Both runs start from the same model, scored once.
    pub before: HeldOut,
    pub after: HeldOut,
}

/// Held-out examples scored: enough to rank the runs, few enough to generate on a CPU in minutes.
const HELD_OUT: usize = 16;
/// Summaries of DialogSum's test split are ~20 words.
const SUMMARY_TOKENS: usize = 48;

/// Runs `steps` steps per granularity at `rho`; held-out loss on the first rows of `held_out`.
pub fn run(model: &Path, train: &Path, held_out: &Path, dev: &ComputeDevice, rho: f64, steps: usize, max_len: usize) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut start: Option<(Vec<Example>, HeldOut)> = None;
    for granularity in [Granularity::Tensor, Granularity::Head] {
        let out = std::env::temp_dir().join(format!("greentrainer-bench-granularity-{}", std::process::id()));
        let config = TrainConfig {
            model: model.to_path_buf(),
            data: train.to_path_buf(),
            output: out.clone(),
            device: crate::device::DeviceChoice::Cpu,
            method: MethodKind::Greentrainer,
            granularity,
            rho,
            epochs: 0,
            max_steps: steps,
            max_len,
            lr: 1e-4,
            reselect_every_epochs: 0,
            save_model: false,
            ..TrainConfig::default()
        };
        let mut trainer = Trainer::prepare(config, dev.clone())?;
        let (held, before) = match start.take() {
            Some(scored) => scored,
            None => {
                let held = held_out::examples(&trainer.loaded, held_out, max_len, SUMMARY_TOKENS, HELD_OUT)?;
                let before = held_out::score(&trainer.loaded, trainer.pad_id(), &held, SUMMARY_TOKENS, &AtomicBool::new(false))?;
                (held, before)
            }
        };
        let (mut selected, mut realised, mut spent, mut last) = (0, 0.0, 0.0, f64::NAN);
        trainer.run(
            &mut |e: &Event| match e {
                Event::Selection { selected: s, realised_rho, .. } => {
                    selected = s.len();
                    realised = *realised_rho;
                }
                Event::Step { loss, flops_spent, .. } => {
                    last = *loss;
                    spent = *flops_spent;
                }
                _ => {}
            },
            &RunControl::default(),
            false,
        )?;
        let after = held_out::score(&trainer.loaded, trainer.pad_id(), &held, SUMMARY_TOKENS, &AtomicBool::new(false))?;
        let _ = std::fs::remove_dir_all(out);
        rows.push(Row {
            granularity,
            selected,
            realised_rho: realised,
            flops_spent: spent,
            final_train_loss: last,
            before: before.clone(),
            after,
        });
        start = Some((held, before));
    }
    Ok(rows)
}

pub fn table(rows: &[Row], rho: f64, steps: usize) -> String {
    let mut out = String::from(
        "| granularity | candidates selected | realised rho | FLOPs spent | final train loss | held-out loss before -> after | held-out ROUGE-1/2/L before -> after |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out += &format!(
            "| {:?} | {} | {:.3} | {} | {:.4} | {:.4} -> {:.4} | {} -> {} |\n",
            r.granularity,
            r.selected,
            r.realised_rho,
            crate::profile::FlopsConvention::Flops.format(r.flops_spent / 2.0),
            r.final_train_loss,
            r.before.loss,
            r.after.loss,
            rouge_cell(&r.before.rouge),
            rouge_cell(&r.after.rouge)
        );
    }
    out + &format!(
        "\nGreenTrainer rho {rho}, {steps} steps from the same start on the same batches (importance scoring included in FLOPs); held-out: the first {HELD_OUT} test rows, greedy summaries of up to {SUMMARY_TOKENS} tokens, ROUGE F1 x 100 with stemming\n"
    )
}

/// The bundled demo files, the default data of this benchmark.
pub fn demo_files() -> (PathBuf, PathBuf) {
    let dir = PathBuf::from("assets/demo");
    (dir.join("dialogsum.train.jsonl"), dir.join("dialogsum.test.jsonl"))
}
