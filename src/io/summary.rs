//! A one-screen description of a loaded model, for `greentrainer inspect` and the app.

use serde::Serialize;

use super::{LoadedModel, ModelSource};
use crate::model::Parameters;

#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub source: String,
    pub format: &'static str,
    pub architecture: String,
    /// Reads a source and writes a target (T5) rather than continuing one sequence.
    pub encoder_decoder: bool,
    pub parameters: usize,
    pub tensors: usize,
    pub layers: usize,
    pub hidden_size: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub vocab_size: usize,
    /// `None`: no position table (ALiBi, T5's relative buckets).
    pub context_length: Option<usize>,
    pub tied_embeddings: bool,
    pub tokenizer: String,
    pub has_chat_template: bool,
}

impl ModelSummary {
    pub fn of(loaded: &LoadedModel) -> Self {
        let c = loaded.model.info();
        let (source, format) = match &loaded.source {
            ModelSource::HfFolder(p) => (p.display().to_string(), "HF folder"),
            ModelSource::Gguf(p) => (p.display().to_string(), "GGUF"),
        };
        let tokenizer_model = match loaded.tokenizer.get_model() {
            tokenizers::ModelWrapper::BPE(_) => "BPE",
            tokenizers::ModelWrapper::WordPiece(_) => "WordPiece",
            tokenizers::ModelWrapper::Unigram(_) => "Unigram",
            tokenizers::ModelWrapper::WordLevel(_) => "WordLevel",
        };
        Self {
            source,
            format,
            architecture: c.model_type.clone(),
            encoder_decoder: loaded.model.is_encoder_decoder(),
            parameters: loaded.model.num_params(),
            tensors: loaded.model.param_names().len(),
            layers: c.layers,
            hidden_size: c.hidden_size,
            heads: c.heads,
            kv_heads: c.kv_heads,
            vocab_size: c.vocab_size,
            context_length: c.context_length,
            tied_embeddings: c.tied_embeddings,
            tokenizer: format!("{tokenizer_model}, {} tokens", loaded.tokenizer.get_vocab_size(true)),
            has_chat_template: loaded.chat_template().is_some(),
        }
    }
}

impl std::fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "model        {} ({})", self.source, self.format)?;
        writeln!(f, "architecture {}{}", self.architecture, if self.encoder_decoder { " (encoder-decoder)" } else { "" })?;
        writeln!(f, "parameters   {:.1} M in {} tensors", self.parameters as f64 / 1e6, self.tensors)?;
        writeln!(f, "layers       {} (hidden {}, {} heads, {} kv heads)", self.layers, self.hidden_size, self.heads, self.kv_heads)?;
        writeln!(f, "vocabulary   {} (embeddings {})", self.vocab_size, if self.tied_embeddings { "tied" } else { "untied" })?;
        match self.context_length {
            Some(n) => writeln!(f, "context      {n}")?,
            None => writeln!(f, "context      unbounded (no position table)")?,
        }
        write!(f, "tokenizer    {}{}", self.tokenizer, if self.has_chat_template { ", chat template" } else { "" })
    }
}
