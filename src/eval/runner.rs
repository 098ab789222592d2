//! Evaluating a model on a dataset split: generate for each prompt, score ROUGE against all
//! references, and keep the predictions.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::generate::{GenerateOptions, generate};
use super::rouge::{CorpusRouge, RougeOptions, corpus_score, score_multi};
use crate::data::Example;
use crate::error::{Error, Result};
use crate::io::LoadedModel;

#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// Where the row was in the data file ("line N" / "row N").
    pub at: String,
    pub prediction: String,
    pub references: Vec<String>,
    pub rouge1: f64,
    pub rouge2: f64,
    pub rouge_l: f64,
}

#[derive(Debug, Clone)]
pub struct Evaluation {
    pub rouge: CorpusRouge,
    pub predictions: Vec<Prediction>,
}

/// Generates for every example's prompt and scores it; `progress(done, total)` after each row.
pub fn evaluate(
    loaded: &LoadedModel,
    examples: &[Example],
    generation: &GenerateOptions,
    rouge: &RougeOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Evaluation> {
    let mut predictions = Vec::with_capacity(examples.len());
    for (i, ex) in examples.iter().enumerate() {
        let out = generate(&loaded.model, ex.prompt_ids(), generation);
        let text = loaded.tokenizer.decode(&out, true).map_err(|e| Error::Other(format!("cannot decode a prediction: {e}")))?;
        let text = text.trim().to_string();
        let s = score_multi(&text, &ex.references, rouge);
        predictions.push(Prediction {
            at: ex.at.to_string(),
            prediction: text,
            references: ex.references.clone(),
            rouge1: s.rouge1.fmeasure,
            rouge2: s.rouge2.fmeasure,
            rouge_l: s.rouge_l.fmeasure,
        });
        progress(i + 1, examples.len());
    }
    let preds: Vec<String> = predictions.iter().map(|p| p.prediction.clone()).collect();
    let refs: Vec<Vec<String>> = predictions.iter().map(|p| p.references.clone()).collect();
    Ok(Evaluation { rouge: corpus_score(&preds, &refs, rouge), predictions })
}

/// Writes one JSON object per prediction.
pub fn write_predictions(path: &Path, predictions: &[Prediction]) -> Result<()> {
    let mut text = Vec::new();
    for p in predictions {
        serde_json::to_writer(&mut text, p).map_err(|e| Error::Other(e.to_string()))?;
        writeln!(text).map_err(|e| Error::io(path, e))?;
    }
    crate::io::atomic::write_file(path, &text)
}
