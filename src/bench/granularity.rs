//! `greentrainer bench granularity`: GreenTrainer at the same rho with whole-tensor selection and
//! with head-block selection, from the same start on the same batches: FLOPs spent, realised rho,
//! training loss, held-out loss and held-out ROUGE (greedy summaries), side by side.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use crate::data::{Example, load_dataset, pad_batch};
use crate::device::ComputeDevice;
use crate::error::Result;
use crate::eval::generate::GenerateOptions;
use crate::eval::rouge::{CorpusRouge, RougeOptions};
use crate::eval::runner::evaluate;
use crate::train::batch::DeviceBatch;
use crate::train::step::forward_backward;
use crate::train::{Event, Granularity, MethodKind, TrainConfig, Trainer};

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

/// Loss and ROUGE on the held-out rows.
#[derive(Clone)]
pub struct HeldOut {
    pub loss: f64,
    pub rouge: CorpusRouge,
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
                let held = held_out_examples(&trainer, held_out, max_len)?;
                let before = held_out_scores(&trainer, &held)?;
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
            &AtomicBool::new(false),
            false,
        )?;
        let after = held_out_scores(&trainer, &held)?;
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

/// The first [`HELD_OUT`] rows of `path`.
fn held_out_examples(trainer: &Trainer, path: &Path, max_len: usize) -> Result<Vec<Example>> {
    // Encoded as the trainer encodes its data (chat template, an encoder-decoder's special tokens).
    let mut data = load_dataset(path, &trainer.loaded.tokenizer, &trainer.loaded.load_options(max_len)?)?;
    data.examples.truncate(HELD_OUT);
    Ok(data.examples)
}

/// The trainer's current model on `examples`: mean loss in batches of 4, ROUGE of greedy summaries.
fn held_out_scores(trainer: &Trainer, examples: &[Example]) -> Result<HeldOut> {
    let model = &trainer.loaded.model;
    let losses: Vec<f64> = examples
        .chunks(4)
        .map(|chunk| {
            let chunk: Vec<&Example> = chunk.iter().collect();
            forward_backward(model, &|_| false, &DeviceBatch::new(&pad_batch(&chunk, trainer.pad_id()), model)).map(|p| p.loss)
        })
        .collect::<Result<_>>()?;
    let opts = GenerateOptions::greedy(SUMMARY_TOKENS);
    let eval = evaluate(&trainer.loaded, examples, &opts, &RougeOptions { use_stemmer: true }, &mut |_, _| {})?;
    Ok(HeldOut { loss: losses.iter().sum::<f64>() / losses.len().max(1) as f64, rouge: eval.rouge })
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
            rouge(&r.before.rouge),
            rouge(&r.after.rouge)
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

fn rouge(r: &CorpusRouge) -> String {
    format!("{:.1}/{:.1}/{:.1}", r.rouge1 * 100.0, r.rouge2 * 100.0, r.rouge_l * 100.0)
}
