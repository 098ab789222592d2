//! Evaluating a model on a dataset split: generate for each prompt, score ROUGE against all
//! references, and keep the predictions.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::generate::{GenerateOptions, Strategy, generate};
use super::rouge::{CorpusRouge, RougeOptions, corpus_score, score_multi};
use crate::data::Example;
use crate::error::{Error, Result};
use crate::io::LoadedModel;

/// How a model is evaluated: one setting for `greentrainer eval`, the app's Evaluate tab and the
/// benchmarks, so one model on the same rows gets one ROUGE everywhere.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalSettings {
    /// Beams; 1 decodes greedily.
    pub beams: usize,
    /// transformers' repetition penalty (1: off).
    pub repetition_penalty: f32,
    /// Tokens generated at most; each prompt leaves this much of `max_len` for them.
    pub max_new_tokens: usize,
    /// Longest prompt + answer (for an encoder-decoder model, the longest prompt).
    pub max_len: usize,
    /// Porter-stem words before scoring.
    pub stemmer: bool,
}

impl EvalSettings {
    /// Greedy decoding with no penalty: what the app shows and `eval` does unless told otherwise
    /// (the paper's setting is 4 beams with repetition penalty 2.5).
    pub fn greedy(max_new_tokens: usize, max_len: usize) -> Self {
        Self { beams: 1, repetition_penalty: 1.0, max_new_tokens, max_len, stemmer: false }
    }

    /// How data files are encoded for evaluation: as `loaded` trains, with each prompt cut to
    /// leave room for the answer (see `LoadOptions::answer_room`).
    pub fn load_options(&self, loaded: &LoadedModel) -> Result<crate::data::LoadOptions> {
        Ok(crate::data::LoadOptions { answer_room: Some(self.max_new_tokens), ..loaded.load_options(self.max_len)? })
    }

    pub fn generation(&self, loaded: &LoadedModel) -> GenerateOptions {
        GenerateOptions {
            strategy: if self.beams > 1 { Strategy::Beam { num_beams: self.beams, length_penalty: 1.0 } } else { Strategy::Greedy },
            max_new_tokens: self.max_new_tokens,
            repetition_penalty: self.repetition_penalty,
            eos_token_ids: loaded.eos_token_ids(),
            use_cache: true,
        }
    }

    pub fn rouge(&self) -> RougeOptions {
        RougeOptions { use_stemmer: self.stemmer }
    }
}

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

/// Generates for every example's prompt and scores it; `progress(done, total)` after each row,
/// which stops the evaluation with [`Error::Cancelled`] by returning false.
pub fn evaluate(
    loaded: &LoadedModel,
    examples: &[Example],
    generation: &GenerateOptions,
    rouge: &RougeOptions,
    progress: &mut dyn FnMut(usize, usize) -> bool,
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
        if !progress(i + 1, examples.len()) {
            return Err(Error::Cancelled);
        }
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
