//! Held-out scoring shared by the accuracy benchmarks: rows encoded as evaluation encodes them
//! (each prompt leaves room for the answer, whatever the reference's length), their mean loss,
//! and the ROUGE of greedy summaries.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::data::{Example, load_dataset, pad_batch};
use crate::error::Result;
use crate::eval::rouge::CorpusRouge;
use crate::eval::runner::{EvalSettings, evaluate};
use crate::io::LoadedModel;
use crate::train::batch::DeviceBatch;
use crate::train::step::forward_backward;

/// Loss and ROUGE on the held-out rows.
#[derive(Clone, Debug)]
pub struct HeldOut {
    pub loss: f64,
    pub rouge: CorpusRouge,
}

/// The first `rows` rows of `path`, encoded for `loaded` with `answer_tokens` of `max_len` left for
/// the answer.
pub fn examples(loaded: &LoadedModel, path: &Path, max_len: usize, answer_tokens: usize, rows: usize) -> Result<Vec<Example>> {
    let mut data = load_dataset(path, &loaded.tokenizer, &settings(answer_tokens, max_len).load_options(loaded)?)?;
    data.require_targets()?;
    data.examples.truncate(rows);
    Ok(data.examples)
}

/// `loaded` on `examples`: mean loss in batches of 4 (padded with `pad_id`), ROUGE (F1, stemmed)
/// of greedy summaries of up to `answer_tokens` tokens; `cancel` stops it between rows.
pub fn score(loaded: &LoadedModel, pad_id: u32, examples: &[Example], answer_tokens: usize, cancel: &AtomicBool) -> Result<HeldOut> {
    let model = &loaded.model;
    let losses: Vec<f64> = examples
        .chunks(4)
        .map(|chunk| {
            let chunk: Vec<&Example> = chunk.iter().collect();
            forward_backward(model, &|_| false, &DeviceBatch::new(&pad_batch(&chunk, pad_id), model)).map(|p| p.loss)
        })
        .collect::<Result<_>>()?;
    // max_len only shapes the encoding, done by `examples`.
    let s = settings(answer_tokens, 0);
    let eval = evaluate(loaded, examples, &s.generation(loaded), &s.rouge(), &mut |_, _| !cancel.load(Ordering::Relaxed))?;
    Ok(HeldOut { loss: losses.iter().sum::<f64>() / losses.len().max(1) as f64, rouge: eval.rouge })
}

/// Greedy answers of up to `answer_tokens`, ROUGE with stemming (as the paper's rouge-score).
fn settings(answer_tokens: usize, max_len: usize) -> EvalSettings {
    EvalSettings { stemmer: true, ..EvalSettings::greedy(answer_tokens, max_len) }
}

/// ROUGE-1/2/L as F1 x 100.
pub fn rouge_cell(r: &CorpusRouge) -> String {
    format!("{:.1}/{:.1}/{:.1}", r.rouge1 * 100.0, r.rouge2 * 100.0, r.rouge_l * 100.0)
}
