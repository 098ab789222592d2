//! `greentrainer bench granularity`: GreenTrainer at the same rho with whole-tensor selection and
//! with head-block selection, from the same start on the same batches: FLOPs spent, realised rho,
//! training loss and held-out loss, side by side.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::data::{LoadOptions, load_dataset, pad_batch};
use crate::device::ComputeDevice;
use crate::error::Result;
use crate::model::Model;
use crate::train::batch::DeviceBatch;
use crate::train::step::forward_backward;
use crate::train::{Event, Granularity, MethodKind, TrainConfig, Trainer};

pub struct Row {
    pub granularity: Granularity,
    pub selected: usize,
    pub realised_rho: f64,
    pub flops_spent: f64,
    pub final_train_loss: f64,
    pub held_out_before: f64,
    pub held_out_after: f64,
}

/// Runs `steps` steps per granularity at `rho`; held-out loss on the first rows of `held_out`.
pub fn run(model: &Path, train: &Path, held_out: &Path, dev: &ComputeDevice, rho: f64, steps: usize, max_len: usize) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
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
        let before = held_out_loss(&trainer.loaded.model, &trainer, held_out, max_len)?;
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
            &AtomicBool::new(false),
            false,
        )?;
        let after = held_out_loss(&trainer.loaded.model, &trainer, held_out, max_len)?;
        let _ = std::fs::remove_dir_all(out);
        rows.push(Row {
            granularity,
            selected,
            realised_rho: realised,
            flops_spent: spent,
            final_train_loss: last,
            held_out_before: before,
            held_out_after: after,
        });
    }
    Ok(rows)
}

/// Mean loss over the first 16 held-out examples, in batches of 4.
fn held_out_loss(model: &Model, trainer: &Trainer, path: &Path, max_len: usize) -> Result<f64> {
    let eos = trainer.loaded.eos_token_id()?;
    let data = load_dataset(path, &trainer.loaded.tokenizer, &LoadOptions::new(max_len, eos))?;
    let examples: Vec<_> = data.examples.iter().take(16).collect();
    let pad = model.info().pad_token_id.unwrap_or(eos);
    let losses: Vec<f64> = examples
        .chunks(4)
        .map(|chunk| forward_backward(model, &|_| false, &DeviceBatch::new(&pad_batch(chunk, pad), model)).map(|p| p.loss))
        .collect::<Result<_>>()?;
    Ok(losses.iter().sum::<f64>() / losses.len().max(1) as f64)
}

pub fn table(rows: &[Row], rho: f64, steps: usize) -> String {
    let mut out = String::from(
        "| granularity | candidates selected | realised rho | FLOPs spent | final train loss | held-out loss before -> after |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out += &format!(
            "| {:?} | {} | {:.3} | {} | {:.4} | {:.4} -> {:.4} |\n",
            r.granularity,
            r.selected,
            r.realised_rho,
            crate::profile::FlopsConvention::Flops.format(r.flops_spent / 2.0),
            r.final_train_loss,
            r.held_out_before,
            r.held_out_after
        );
    }
    out + &format!(
        "\nGreenTrainer rho {rho}, {steps} steps from the same start on the same batches (importance scoring included in FLOPs)\n"
    )
}

/// The bundled demo files, the default data of this benchmark.
pub fn demo_files() -> (PathBuf, PathBuf) {
    let dir = PathBuf::from("assets/demo");
    (dir.join("dialogsum.train.jsonl"), dir.join("dialogsum.test.jsonl"))
}
